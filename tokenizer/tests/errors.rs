//! Error handling and the pipeline on a tiny hand-made vocabulary (no fixtures needed).

use std::path::PathBuf;

use unclip_tokenizer::{ClipTokenizer, TokenizerError, TokenizerOptions, TokenizerSource};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unclip-tokenizer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const VOCAB: &str = r#"{"a": 0, "b": 1, "a</w>": 2, "b</w>": 3, "ab</w>": 4, "!</w>": 5, "!": 6,
  "<|startoftext|>": 7, "<|endoftext|>": 8}"#;
const MERGES: &str = "#version: 0.2\na b</w>\n";

fn tiny(name: &str, config: Option<&str>) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("vocab.json"), VOCAB).unwrap();
    std::fs::write(dir.join("merges.txt"), MERGES).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join("tokenizer_config.json"), c).unwrap();
    }
    dir
}

#[test]
fn tiny_vocab_pipeline() {
    let dir = tiny("pipeline", None);
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.source(), TokenizerSource::VocabMerges);
    assert_eq!(tok.context_length(), 77);
    let ids = tok.special_ids();
    assert_eq!((ids.bos, ids.eos, ids.pad), (7, 8, 8));
    assert_eq!(tok.content_ids("A  b\tAB!").unwrap(), vec![2, 3, 4, 5]);
    assert_eq!(tok.content_ids("a<|endoftext|>b").unwrap(), vec![2, 8, 3]);

    let tok = tok.with_context_length(5).unwrap();
    let enc = tok.encode_batch(&["ab", "a b a b", ""]).unwrap();
    assert_eq!(
        enc.ids,
        vec![
            vec![7, 4, 8, 8, 8],
            vec![7, 2, 3, 2, 8],
            vec![7, 8, 8, 8, 8]
        ]
    );
    assert_eq!(
        enc.attention_mask,
        vec![vec![1, 1, 1, 0, 0], vec![1; 5], vec![1, 1, 0, 0, 0]]
    );
    assert_eq!(enc.eot_positions, vec![2, 4, 1]);
    assert!(enc.truncated(1) && !enc.truncated(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pad_bang_makes_bang_special() {
    let dir = tiny("bang", Some(r#"{"pad_token": "!", "model_max_length": 6}"#));
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.special_ids().pad, 6);
    assert_eq!(tok.context_length(), 6);
    assert_eq!(tok.content_ids("ab!").unwrap(), vec![4, 6]);
    let enc = tok.encode_batch(&["a!"]).unwrap();
    assert_eq!(enc.flat_ids(), vec![7, 2, 6, 8, 6, 6]);
    assert_eq!(enc.flat_attention_mask(), vec![1, 1, 1, 1, 0, 0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn user_errors_are_typed() {
    let dir = tiny("user", None);
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    let empty: [&str; 0] = [];
    assert!(matches!(
        tok.encode_batch(&empty),
        Err(TokenizerError::EmptyBatch)
    ));
    assert!(matches!(
        tok.clone().with_context_length(1),
        Err(TokenizerError::ContextTooShort(1))
    ));
    let opts = TokenizerOptions::default().context_length(0);
    assert!(matches!(
        ClipTokenizer::from_dir_with_options(&dir, opts),
        Err(TokenizerError::ContextTooShort(0))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_files_are_named() {
    let missing = std::env::temp_dir().join("unclip-tokenizer-does-not-exist");
    let err = ClipTokenizer::from_dir(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::NotADirectory(_)), "{err}");

    let dir = temp_dir("empty");
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::MissingFiles { .. }), "{err}");

    std::fs::write(dir.join("vocab.json"), VOCAB).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("merges.txt is missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_files_are_named() {
    let dir = tiny("bad-merges", None);
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("merges.txt") && msg.contains("line 2"),
        "{msg}"
    );

    std::fs::write(dir.join("merges.txt"), MERGES).unwrap();
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0,").unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizerError::Json { ref path, .. } if path.ends_with("vocab.json")),
        "{err}"
    );

    std::fs::write(dir.join("vocab.json"), r#"{"a": "zero"}"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(dir.join("vocab.json"), VOCAB).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"pad_token": 5}"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");

    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": "<s>"}"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnknownSpecialToken { role: "bos", .. }),
        "{err}"
    );

    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"version": "1.0"}"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
