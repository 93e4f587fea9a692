//! Reading a Hugging Face tokenizer folder: `tokenizer.json`, or `vocab.json` + `merges.txt`,
//! with `tokenizer_config.json` / `special_tokens_map.json`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Result, TokenizerError};

/// The context length used when `tokenizer_config.json` gives no usable `model_max_length`.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

/// CLIP's pre-tokenizer regex (as in `tokenizer.json` of `CLIPTokenizerFast`).
const CLIP_SPLIT_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Which files of the folder the tokenizer was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerSource {
    /// `tokenizer.json`, used as-is (plus special tokens the configs add).
    TokenizerJson,
    /// `vocab.json` + `merges.txt`, with the CLIP pipeline built as transformers 5 builds it.
    VocabMerges,
}

/// An entry of `added_tokens_decoder` in `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub(crate) struct AddedTokenConfig {
    pub id: u32,
    pub token: AddedToken,
}

/// What the two config files say (all optional; CLIP defaults otherwise).
#[derive(Debug, Clone)]
pub(crate) struct FolderConfig {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub model_max_length: Option<usize>,
    pub added_tokens: Vec<AddedTokenConfig>,
}

/// A loaded folder: the `tokenizers` pipeline (special tokens registered) and its config.
pub(crate) struct Loaded {
    pub tokenizer: Tokenizer,
    pub config: FolderConfig,
    pub source: TokenizerSource,
}

fn lib_err(context: &Path, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Library {
        context: context.display().to_string(),
        message: e.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn malformed(path: &Path, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Malformed {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// A special-token entry: a string, an `AddedToken` object with `content`, or null.
fn token_content(path: &Path, key: &str, value: &Value) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(map) => match map.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(malformed(
                path,
                format!("`{key}` is an object without a string `content`"),
            )),
        },
        _ => Err(malformed(
            path,
            format!("`{key}` must be a string or an object with `content`"),
        )),
    }
}

fn flag(map: &serde_json::Map<String, Value>, key: &str, default: bool) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// Reads `tokenizer_config.json` and `special_tokens_map.json` when present.
///
/// Special tokens come from `tokenizer_config.json`, then `special_tokens_map.json` for those it
/// does not name, then CLIP's defaults (bos `<|startoftext|>`, eos/unk/pad `<|endoftext|>`).
pub(crate) fn read_config(dir: &Path) -> Result<FolderConfig> {
    let mut roles: HashMap<&'static str, String> = HashMap::new();
    let mut model_max_length = None;
    let mut added_tokens = Vec::new();
    const ROLES: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

    let config_path = dir.join("tokenizer_config.json");
    if config_path.is_file() {
        let json = read_json(&config_path)?;
        let obj = json
            .as_object()
            .ok_or_else(|| malformed(&config_path, "top level is not a JSON object"))?;
        for role in ROLES {
            if let Some(v) = obj.get(role)
                && let Some(content) = token_content(&config_path, role, v)?
            {
                roles.insert(role, content);
            }
        }
        // Transformers writes int(1e30) ("no limit") when a checkpoint sets none: ignore that.
        if let Some(v) = obj.get("model_max_length") {
            model_max_length = v.as_u64().filter(|&n| n <= 1 << 20).map(|n| n as usize);
        }
        if let Some(decoder) = obj.get("added_tokens_decoder") {
            let decoder = decoder.as_object().ok_or_else(|| {
                malformed(&config_path, "`added_tokens_decoder` is not an object")
            })?;
            for (id, entry) in decoder {
                let id: u32 = id.parse().map_err(|_| {
                    malformed(
                        &config_path,
                        format!("`added_tokens_decoder` key {id:?} is not an id"),
                    )
                })?;
                let entry = entry.as_object().ok_or_else(|| {
                    malformed(
                        &config_path,
                        format!("`added_tokens_decoder[{id}]` is not an object"),
                    )
                })?;
                let content = match entry.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => {
                        return Err(malformed(
                            &config_path,
                            format!("`added_tokens_decoder[{id}]` has no string `content`"),
                        ));
                    }
                };
                let token = AddedToken::from(content, flag(entry, "special", false))
                    .single_word(flag(entry, "single_word", false))
                    .lstrip(flag(entry, "lstrip", false))
                    .rstrip(flag(entry, "rstrip", false))
                    .normalized(flag(entry, "normalized", true));
                added_tokens.push(AddedTokenConfig { id, token });
            }
            added_tokens.sort_by_key(|t| t.id);
        }
    }

    let map_path = dir.join("special_tokens_map.json");
    if map_path.is_file() {
        let json = read_json(&map_path)?;
        let obj = json
            .as_object()
            .ok_or_else(|| malformed(&map_path, "top level is not a JSON object"))?;
        for role in ROLES {
            if roles.contains_key(role) {
                continue;
            }
            if let Some(v) = obj.get(role)
                && let Some(content) = token_content(&map_path, role, v)?
            {
                roles.insert(role, content);
            }
        }
    }

    let get = |role: &str, default: &str| roles.get(role).cloned().unwrap_or(default.to_string());
    Ok(FolderConfig {
        bos: get("bos_token", "<|startoftext|>"),
        eos: get("eos_token", "<|endoftext|>"),
        unk: get("unk_token", "<|endoftext|>"),
        pad: get("pad_token", "<|endoftext|>"),
        model_max_length,
        added_tokens,
    })
}

/// Loads `dir`: `tokenizer.json` when present, else `vocab.json` + `merges.txt`.
pub(crate) fn load_dir(dir: &Path) -> Result<Loaded> {
    if !dir.is_dir() {
        return Err(TokenizerError::NotADirectory(dir.to_path_buf()));
    }
    let config = read_config(dir)?;
    let json_path = dir.join("tokenizer.json");
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    let (mut tokenizer, source) = if json_path.is_file() {
        (
            load_tokenizer_json(&json_path)?,
            TokenizerSource::TokenizerJson,
        )
    } else if vocab_path.is_file() && merges_path.is_file() {
        (
            build_clip_bpe(&vocab_path, &merges_path, &config)?,
            TokenizerSource::VocabMerges,
        )
    } else {
        let detail = match (vocab_path.is_file(), merges_path.is_file()) {
            (true, false) => "; vocab.json is present but merges.txt is missing",
            (false, true) => "; merges.txt is present but vocab.json is missing",
            _ => "",
        };
        return Err(TokenizerError::MissingFiles {
            dir: dir.to_path_buf(),
            detail: detail.to_string(),
        });
    };
    register_special_tokens(&mut tokenizer, &config, dir)?;
    Ok(Loaded {
        tokenizer,
        config,
        source,
    })
}

fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    // Parse the JSON ourselves first so that a syntax error is reported as such.
    let text = read_text(path)?;
    let value: Value = serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tokenizer: Tokenizer = serde_json::from_value(value).map_err(|e| lib_err(path, e))?;
    // Framing (start/end, truncation, padding) is done by this crate.
    tokenizer
        .with_truncation(None)
        .map_err(|e| lib_err(path, e))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn read_vocab(path: &Path) -> Result<Vocab> {
    let json = read_json(path)?;
    let obj = json
        .as_object()
        .ok_or_else(|| malformed(path, "top level is not a JSON object of token -> id"))?;
    let mut vocab = Vocab::default();
    for (token, id) in obj {
        let id = id
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| malformed(path, format!("token {token:?} has no integer id: {id}")))?;
        vocab.insert(token.clone(), id);
    }
    if vocab.is_empty() {
        return Err(malformed(path, "the vocabulary is empty"));
    }
    Ok(vocab)
}

fn read_merges(path: &Path) -> Result<Merges> {
    let text = read_text(path)?;
    let mut merges = Merges::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()));
            }
            _ => {
                return Err(malformed(
                    path,
                    format!(
                        "line {}: expected two space-separated symbols, got {line:?}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

/// Escapes regex metacharacters of a literal.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The CLIP byte-level BPE pipeline from `vocab.json` + `merges.txt`, as transformers 5's
/// `CLIPTokenizer` builds it: normalizer NFC -> `\s+` to " " -> lowercase; pre-tokenizer split on
/// the CLIP regex (prefixed with the start/end tokens) then ByteLevel without prefix space; BPE
/// with the `</w>` end-of-word suffix.
fn build_clip_bpe(
    vocab_path: &Path,
    merges_path: &Path,
    config: &FolderConfig,
) -> Result<Tokenizer> {
    let vocab = read_vocab(vocab_path)?;
    let merges = read_merges(merges_path)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(config.unk.clone())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".to_string())
        .fuse_unk(false)
        .build()
        .map_err(|e| lib_err(merges_path, e))?;

    let step = Path::new("CLIP pipeline");
    let normalizer = NormalizerSequence::new(vec![
        NFC.into(),
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| lib_err(step, e))?
        .into(),
        Lowercase.into(),
    ]);
    let mut specials = vec![regex_escape(&config.bos), regex_escape(&config.eos)];
    specials.dedup();
    let pattern = format!("{}|{CLIP_SPLIT_REGEX}", specials.join("|"));
    let split = Split::new(
        SplitPattern::Regex(pattern),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| lib_err(step, e))?;
    let pre_tokenizer =
        PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]);

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| lib_err(step, e))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(tokenizer)
}

/// Registers `added_tokens_decoder` entries and the bos/eos/unk/pad tokens that the tokenizer does
/// not know as added tokens yet. As transformers 5 does, the role tokens are special and matched
/// on the raw text (`normalized: false`): with Karlo's `pad_token` `"!"`, every `!` in a prompt
/// becomes the pad id.
fn register_special_tokens(
    tokenizer: &mut Tokenizer,
    config: &FolderConfig,
    dir: &Path,
) -> Result<()> {
    let known: Vec<String> = tokenizer
        .get_added_tokens_decoder()
        .values()
        .map(|t| t.content.clone())
        .collect();
    let roles = [&config.bos, &config.eos, &config.unk, &config.pad];
    let mut to_add: Vec<AddedToken> = Vec::new();
    let push = |token: AddedToken, to_add: &mut Vec<AddedToken>| {
        if !known.contains(&token.content) && !to_add.iter().any(|t| t.content == token.content) {
            to_add.push(token);
        }
    };
    for entry in &config.added_tokens {
        let mut token = entry.token.clone();
        if roles.contains(&&token.content) {
            token = token.special(true).normalized(false);
        }
        push(token, &mut to_add);
    }
    for (name, role) in ["bos", "eos", "unk", "pad"].into_iter().zip(roles) {
        // A role token without an id would get a new one past the embedding table: refuse.
        if tokenizer.token_to_id(role).is_none() && !to_add.iter().any(|t| &t.content == role) {
            return Err(TokenizerError::UnknownSpecialToken {
                dir: dir.to_path_buf(),
                role: name,
                token: role.clone(),
            });
        }
        push(
            AddedToken::from(role.clone(), true).normalized(false),
            &mut to_add,
        );
    }
    let (special, plain): (Vec<AddedToken>, Vec<AddedToken>) =
        to_add.into_iter().partition(|t| t.special);
    if !plain.is_empty() {
        tokenizer.add_tokens(plain).map_err(|e| lib_err(dir, e))?;
    }
    if !special.is_empty() {
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| lib_err(dir, e))?;
    }
    Ok(())
}
