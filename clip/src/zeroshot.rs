//! Zero-shot classification and retrieval: images against a list of texts, as the CLIP paper
//! (Radford et al. 2021, §3.1.2) and transformers' usage example do it (`logits_per_image`, then
//! a softmax over the texts).

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use unclip_tokenizer::ClipTokenizer;

use crate::ClipError;
use crate::model::{ClipModel, l2_normalize};

/// Scores of every image against every text.
#[derive(Debug, Clone)]
pub struct ZeroShot {
    /// `exp(logit_scale) * cos(image, text)`, `[images][texts]`.
    pub logits: Vec<Vec<f32>>,
    /// Softmax of `logits` over the texts, `[images][texts]`.
    pub probs: Vec<Vec<f32>>,
}

impl ZeroShot {
    /// For each image, the index of the best text.
    pub fn best(&self) -> Vec<usize> {
        self.logits
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
            })
            .collect()
    }

    /// For each text, image indices sorted from best to worst match (retrieval).
    pub fn rank_images(&self) -> Vec<Vec<usize>> {
        let n_texts = self.logits.first().map(|r| r.len()).unwrap_or(0);
        (0..n_texts)
            .map(|t| {
                let mut idx: Vec<usize> = (0..self.logits.len()).collect();
                idx.sort_by(|&a, &b| self.logits[b][t].total_cmp(&self.logits[a][t]));
                idx
            })
            .collect()
    }
}

impl ClipModel {
    /// Scores preprocessed images `pixel_values [B, 3, S, S]` against tokenised texts.
    pub fn zero_shot_ids(
        &self,
        pixel_values: Tensor<4>,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> ZeroShot {
        let image = l2_normalize(self.image_features(pixel_values));
        let text = l2_normalize(self.text_features(input_ids, attention_mask));
        let logits = self.logits(image, text); // [B_img, B_txt]
        let probs = softmax(logits.clone(), 1);
        ZeroShot {
            logits: rows(logits),
            probs: rows(probs),
        }
    }

    /// Tokenises `texts` and scores the images against them.
    ///
    /// ```no_run
    /// # use burn::tensor::Device;
    /// # let device = Device::flex();
    /// # let clip = unclip_clip::ClipModel::from_pretrained("clip", &device).unwrap();
    /// # let tok = unclip_tokenizer::ClipTokenizer::from_dir("clip").unwrap();
    /// # let pixels = unclip_clip::ClipImageProcessor::for_size(224).preprocess(&[image::open("x.png").unwrap()], &device).unwrap();
    /// let scores = clip.zero_shot(&tok, pixels, &["a red circle", "a blue square"]).unwrap();
    /// println!("best label of image 0: {}", scores.best()[0]);
    /// ```
    pub fn zero_shot(
        &self,
        tokenizer: &ClipTokenizer,
        pixel_values: Tensor<4>,
        texts: &[&str],
    ) -> Result<ZeroShot, ClipError> {
        if texts.is_empty() {
            return Err(ClipError::NoTexts);
        }
        let device = pixel_values.device();
        let enc = tokenizer
            .encode_batch(texts)
            .map_err(|e| ClipError::BatchMismatch {
                message: e.to_string(),
            })?;
        let shape = enc.shape();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(enc.flat_ids(), shape), &device);
        let mask =
            Tensor::<2, Int>::from_data(TensorData::new(enc.flat_attention_mask(), shape), &device);
        Ok(self.zero_shot_ids(pixel_values, ids, Some(mask)))
    }
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [n, m] = t.dims();
    let data = t.into_data().convert::<f32>();
    let v = data
        .as_slice::<f32>()
        .map(|s| s.to_vec())
        .unwrap_or_else(|_| vec![0.0; n * m]);
    v.chunks(m.max(1)).map(|c| c.to_vec()).collect()
}
