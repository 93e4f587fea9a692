//! Fixed-context batch encodings: start/end tokens, truncation, padding, attention mask.

use crate::error::{Result, TokenizerError};

/// The ids of the special tokens used to frame and pad a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Start of text (`<|startoftext|>`, 49406 in CLIP).
    pub bos: u32,
    /// End of text (`<|endoftext|>`, 49407 in CLIP).
    pub eos: u32,
    /// Padding (49407 by default; 0 for Karlo's `pad_token` `"!"`).
    pub pad: u32,
}

/// One framed, truncated and padded sequence; see [`frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    /// `context_length` ids: `bos`, content, `eos`, then `pad`.
    pub ids: Vec<i64>,
    /// 1 for `bos`, content and `eos`; 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Index of the appended `eos`.
    pub eot_position: usize,
    /// Length the sequence would have had without truncation (content + 2).
    pub untruncated_len: usize,
}

/// Frames `content` (ids without special tokens) as Hugging Face does with
/// `padding='max_length', truncation=True, max_length=context_length`:
/// `[bos] + content[..context_length - 2] + [eos]`, padded with `pad` to `context_length`.
///
/// The end token is always kept: a long prompt loses content ids, never its `eos`, which ends up
/// at index `context_length - 1`.
///
/// # Errors
/// [`TokenizerError::ContextTooShort`] when `context_length < 2`.
pub fn frame(content: &[u32], ids: SpecialIds, context_length: usize) -> Result<Framed> {
    if context_length < 2 {
        return Err(TokenizerError::ContextTooShort(context_length));
    }
    let kept = content.len().min(context_length - 2);
    let mut out = Vec::with_capacity(context_length);
    out.push(i64::from(ids.bos));
    out.extend(content[..kept].iter().map(|&id| i64::from(id)));
    out.push(i64::from(ids.eos));
    let real = out.len();
    out.resize(context_length, i64::from(ids.pad));
    let mut mask = vec![1i64; real];
    mask.resize(context_length, 0);
    Ok(Framed {
        ids: out,
        attention_mask: mask,
        eot_position: real - 1,
        untruncated_len: content.len() + 2,
    })
}

/// A batch of prompts encoded to a fixed context (77 for CLIP).
///
/// Rows are prompts in input order. [`Encoding::flat_ids`] and [`Encoding::flat_attention_mask`]
/// give row-major `[batch, context_length]` `i64` vectors ready for
/// `TensorData::new(v, [batch, context_length])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[batch][context_length]` token ids.
    pub ids: Vec<Vec<i64>>,
    /// `[batch][context_length]`: 1 for real tokens (including start and end), 0 for padding.
    pub attention_mask: Vec<Vec<i64>>,
    /// Per prompt, the index of the end token appended after the (possibly truncated) content.
    pub eot_positions: Vec<usize>,
    /// Per prompt, the sequence length before truncation (content ids + 2).
    pub untruncated_lengths: Vec<usize>,
    /// Sequence length of every row.
    pub context_length: usize,
}

impl Encoding {
    /// Builds a batch from framed rows (all of length `context_length`).
    pub(crate) fn from_rows(rows: Vec<Framed>, context_length: usize) -> Self {
        let mut enc = Encoding {
            ids: Vec::with_capacity(rows.len()),
            attention_mask: Vec::with_capacity(rows.len()),
            eot_positions: Vec::with_capacity(rows.len()),
            untruncated_lengths: Vec::with_capacity(rows.len()),
            context_length,
        };
        for row in rows {
            enc.ids.push(row.ids);
            enc.attention_mask.push(row.attention_mask);
            enc.eot_positions.push(row.eot_position);
            enc.untruncated_lengths.push(row.untruncated_len);
        }
        enc
    }

    /// Number of prompts.
    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }

    /// `[batch_size, context_length]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.batch_size(), self.context_length]
    }

    /// Whether prompt `i` was cut to fit the context.
    pub fn truncated(&self, i: usize) -> bool {
        self.untruncated_lengths
            .get(i)
            .is_some_and(|&n| n > self.context_length)
    }

    /// Row-major `[batch_size * context_length]` ids.
    pub fn flat_ids(&self) -> Vec<i64> {
        self.ids.concat()
    }

    /// Row-major `[batch_size * context_length]` attention mask (1 real, 0 padding).
    pub fn flat_attention_mask(&self) -> Vec<i64> {
        self.attention_mask.concat()
    }

    /// [`Encoding::eot_positions`] as `i64` (for an index tensor of shape `[batch_size]`).
    pub fn eot_positions_i64(&self) -> Vec<i64> {
        self.eot_positions.iter().map(|&p| p as i64).collect()
    }

    /// Per row, the index of the first largest id: what Hugging Face's CLIP text model pools at
    /// when its config has the legacy `eos_token_id == 2` (`input_ids.argmax(-1)`).
    ///
    /// Equals [`Encoding::eot_positions`] unless the prompt itself contains the literal text
    /// `<|endoftext|>` (encoded as the end-token id before the appended one).
    pub fn argmax_positions(&self) -> Vec<usize> {
        self.ids
            .iter()
            .map(|row| {
                let mut best = 0;
                for (i, &id) in row.iter().enumerate() {
                    if id > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIP: SpecialIds = SpecialIds {
        bos: 49406,
        eos: 49407,
        pad: 49407,
    };
    const KARLO: SpecialIds = SpecialIds {
        bos: 49406,
        eos: 49407,
        pad: 0,
    };

    #[test]
    fn short_prompt_is_framed_and_padded() {
        let f = frame(&[320, 1125], KARLO, 77).unwrap();
        assert_eq!(f.ids.len(), 77);
        assert_eq!(&f.ids[..4], &[49406, 320, 1125, 49407]);
        assert!(f.ids[4..].iter().all(|&x| x == 0));
        assert_eq!(f.eot_position, 3);
        assert_eq!(f.untruncated_len, 4);
    }

    #[test]
    fn padding_with_eos_pad_id() {
        let f = frame(&[320], CLIP, 10).unwrap();
        assert_eq!(
            f.ids,
            vec![
                49406, 320, 49407, 49407, 49407, 49407, 49407, 49407, 49407, 49407
            ]
        );
        // Padding is masked out even though its id equals the end token's.
        assert_eq!(f.attention_mask, vec![1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.eot_position, 2);
    }

    #[test]
    fn mask_counts_start_and_end_tokens() {
        let f = frame(&[1, 2, 3], KARLO, 77).unwrap();
        assert_eq!(f.attention_mask.iter().sum::<i64>(), 5);
        assert_eq!(&f.attention_mask[..6], &[1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn empty_prompt_is_start_and_end_only() {
        let f = frame(&[], KARLO, 77).unwrap();
        assert_eq!(&f.ids[..3], &[49406, 49407, 0]);
        assert_eq!(f.eot_position, 1);
        assert_eq!(f.attention_mask.iter().sum::<i64>(), 2);
    }

    #[test]
    fn long_prompt_keeps_eot_last() {
        let content: Vec<u32> = (1..=100).collect();
        let f = frame(&content, KARLO, 77).unwrap();
        assert_eq!(f.ids.len(), 77);
        assert_eq!(f.ids[0], 49406);
        assert_eq!(f.ids[76], 49407);
        assert_eq!(f.eot_position, 76);
        // The first 75 content ids are kept, the rest dropped.
        assert_eq!(f.ids[1], 1);
        assert_eq!(f.ids[75], 75);
        assert!(f.attention_mask.iter().all(|&m| m == 1));
        assert_eq!(f.untruncated_len, 102);
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let content: Vec<u32> = (1..=75).collect();
        let f = frame(&content, CLIP, 77).unwrap();
        assert_eq!(f.eot_position, 76);
        assert_eq!(f.ids[75], 75);
        let enc = Encoding::from_rows(vec![f], 77);
        assert!(!enc.truncated(0));
        let g = frame(&(1..=76).collect::<Vec<u32>>(), CLIP, 77).unwrap();
        let enc = Encoding::from_rows(vec![g], 77);
        assert!(enc.truncated(0));
    }

    #[test]
    fn context_too_short_is_an_error() {
        assert!(matches!(
            frame(&[1], CLIP, 1),
            Err(TokenizerError::ContextTooShort(1))
        ));
        assert!(frame(&[1], CLIP, 2).is_ok());
        assert_eq!(frame(&[1, 2], CLIP, 2).unwrap().ids, vec![49406, 49407]);
    }

    #[test]
    fn batch_helpers() {
        let rows = vec![
            frame(&[5, 6], KARLO, 6).unwrap(),
            frame(&[], KARLO, 6).unwrap(),
        ];
        let enc = Encoding::from_rows(rows, 6);
        assert_eq!(enc.shape(), [2, 6]);
        assert_eq!(
            enc.flat_ids(),
            vec![49406, 5, 6, 49407, 0, 0, 49406, 49407, 0, 0, 0, 0]
        );
        assert_eq!(
            enc.flat_attention_mask(),
            vec![1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
        );
        assert_eq!(enc.eot_positions, vec![3, 1]);
        assert_eq!(enc.eot_positions_i64(), vec![3, 1]);
        assert_eq!(enc.argmax_positions(), vec![3, 1]);
    }

    #[test]
    fn argmax_finds_literal_end_token_first() {
        let enc = Encoding::from_rows(vec![frame(&[49407, 7], CLIP, 8).unwrap()], 8);
        assert_eq!(enc.eot_positions, vec![3]);
        assert_eq!(enc.argmax_positions(), vec![1]);
    }
}
