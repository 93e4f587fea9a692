//! Optional ftfy-style text clean-up, as the pure-Python `CLIPTokenizer` (transformers 4) and
//! `open_clip` apply before BPE.
//!
//! The `tokenizer.json` pipeline (Hugging Face fast tokenizers, transformers 5) does none of this,
//! so by default ([`CleanMode::None`]) this crate does none of it either. With [`CleanMode::Ftfy`]
//! prompts are cleaned like transformers 4's slow tokenizer
//! (`whitespace_clean(ftfy.fix_text(text)).lower()`); with [`CleanMode::OpenClip`] like
//! `open_clip.tokenize` (`ftfy.fix_text`, then `html.unescape` twice, strip, whitespace clean,
//! lower).
//!
//! Covered from `ftfy.fix_text` (ftfy 6.3 defaults), applied line by line and repeated until the
//! text stops changing, as ftfy does:
//! - HTML entity unescaping (`&amp;`, `&lt;`, `&#39;`, `&eacute;`, upper-cased `&EACUTE;`), skipped
//!   from the first line containing `<` on, as ftfy's `unescape_html="auto"`;
//! - C1 control characters read as windows-1252 (`fix_c1_controls`);
//! - Latin ligatures (`ﬁ` -> `fi`), full-width and half-width forms (`Ａ` -> `A`), curly quotes to
//!   straight quotes, line breaks (`\r\n`, U+2028, ...) to `\n`, ANSI terminal escapes and
//!   control characters removed, NFC.
//!
//! Not covered: ftfy's mojibake repair (`fix_encoding`: re-decoding text such as `cafÃ©` that was
//! decoded with the wrong codec, and its helpers `restore_byte_a0`, `replace_lossy_sequences`,
//! `decode_inconsistent_utf8`).
//!
//! Lower-casing is Rust's [`str::to_lowercase`], which like Python's `str.lower()` applies full
//! Unicode case mappings and the final-sigma rule (`ΣΟΣ` -> `σος`).

use tokenizers::NormalizedString;

use crate::tables::{C1_CP1252, HTML5_ENTITIES, LIGATURES, WIDTH_MAP};

/// Which text clean-up runs before the tokenizer's own pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CleanMode {
    /// None: exactly the `tokenizer.json` pipeline (transformers 5 / fast tokenizers).
    #[default]
    None,
    /// As transformers 4's pure-Python `CLIPTokenizer`: `whitespace_clean(ftfy.fix_text(t)).lower()`.
    Ftfy,
    /// As `open_clip.tokenize`: `ftfy.fix_text`, `html.unescape` twice, strip, whitespace clean,
    /// lower. (Only the clean-up: special tokens and padding still follow the loaded folder.)
    OpenClip,
}

/// Cleans `text` as `mode` says (identity for [`CleanMode::None`]).
pub fn clean_text(text: &str, mode: CleanMode) -> String {
    match mode {
        CleanMode::None => text.to_string(),
        CleanMode::Ftfy => whitespace_clean(&fix_text(text)).to_lowercase(),
        CleanMode::OpenClip => {
            let t = fix_text(text);
            let t = html_unescape(&html_unescape(&t));
            whitespace_clean(&t).to_lowercase()
        }
    }
}

/// Python's `str.isspace()` (Unicode White_Space plus the separators U+001C..U+001F).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r"\s+", " ", text).strip()` with Python's notion of whitespace.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if is_py_space(c) {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

/// The covered subset of `ftfy.fix_text` (see the module docs).
pub fn fix_text(text: &str) -> String {
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    // ftfy fixes one line (up to and including its '\n') at a time.
    for segment in text.split_inclusive('\n') {
        if unescape && segment.contains('<') {
            // unescape_html="auto": text that looks like HTML is left alone from here on.
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// One segment, fixed until it stops changing (bounded, as a guard against cycles).
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    for _ in 0..16 {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = map_chars(&text, |c| {
            C1_CP1252
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, v)| v.to_string())
        });
        text = map_chars(&text, |c| lookup(LIGATURES, c));
        text = map_chars(&text, |c| lookup(WIDTH_MAP, c));
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_ftfy_control(c));
        text = nfc(&text);
        if text == orig {
            break;
        }
    }
    text
}

fn lookup(table: &[(char, &str)], c: char) -> Option<String> {
    table
        .binary_search_by(|(k, _)| k.cmp(&c))
        .ok()
        .map(|i| table[i].1.to_string())
}

fn map_chars(text: &str, f: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(s) => out.push_str(&s),
            None => out.push(c),
        }
    }
    out
}

fn nfc(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    n.nfc();
    n.get().to_string()
}

/// ftfy `uncurl_quotes`: U+02BC and U+2018..U+201B to `'`, U+201C..U+201F to `"`.
fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            other => other,
        })
        .collect()
}

/// ftfy `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy `remove_terminal_escapes`: `\x1b[` followed by digits/semicolons and one ASCII letter.
fn remove_terminal_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ';') {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// ftfy `remove_control_chars`' set.
fn is_ftfy_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

fn html5(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| HTML5_ENTITIES[i].1)
}

/// ftfy `unescape_html`: replaces `&#?[0-9A-Za-z]{1,24};` references it can decode.
fn ftfy_unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let body = tail[1..].strip_prefix('#').unwrap_or(&tail[1..]);
        let hash = body.len() != tail.len() - 1;
        let run = body.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if (1..=24).contains(&run) && body.as_bytes().get(run) == Some(&b';') {
            let len = 1 + usize::from(hash) + run + 1;
            let reference = &tail[..len];
            if let Some(decoded) = ftfy_entity(reference) {
                out.push_str(&decoded);
                rest = &tail[len..];
                continue;
            }
        }
        out.push('&');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// ftfy's `HTML_ENTITIES` lookup and numeric fallback for one `&...;` reference.
fn ftfy_entity(reference: &str) -> Option<String> {
    let name = &reference[1..];
    if name.starts_with('#') {
        let decoded = html_unescape(reference);
        return (!decoded.contains(';')).then_some(decoded);
    }
    if let Some(v) = html5(name) {
        return Some(v.to_string());
    }
    // Upper-cased entities (`&EACUTE;`) of all-lowercase names, unless Python's html.unescape
    // already decodes the upper-cased form.
    let lower = name.to_ascii_lowercase();
    if lower.to_ascii_uppercase() == name
        && lower != name
        && let Some(v) = html5(&lower)
        && html_unescape(reference) == reference
    {
        return Some(v.to_uppercase());
    }
    None
}

/// Python's `html.unescape` (named references from HTML5, legacy names without `;`, numeric
/// references with the HTML5 replacement rules).
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp + 1..];
        match unescape_one(tail) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference after an `&`; returns the replacement and the bytes consumed.
fn unescape_one(tail: &str) -> Option<(String, usize)> {
    if let Some(num) = tail.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let n = digits
            .bytes()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if n == 0 {
            return None;
        }
        let mut used = 1 + usize::from(hex) + n;
        if digits.as_bytes().get(n) == Some(&b';') {
            used += 1;
        }
        let value =
            u64::from_str_radix(&digits[..n], if hex { 16 } else { 10 }).unwrap_or(u64::MAX);
        return Some((numeric_reference(value), used));
    }
    // `[^\t\n\f <&#;]{1,32};?`
    let mut end = 0;
    for (count, (i, c)) in tail.char_indices().enumerate() {
        if count == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end = i + c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    let with_semi = if tail[end..].starts_with(';') {
        end + 1
    } else {
        end
    };
    if let Some(v) = html5(&tail[..with_semi]) {
        return Some((v.to_string(), with_semi));
    }
    // Longest legacy prefix of at least 2 characters: "&ampx" -> "&" + "x".
    let name = &tail[..with_semi];
    let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in bounds.iter().rev() {
        if let Some(v) = html5(&name[..cut]) {
            return Some((format!("{v}{}", &name[cut..]), with_semi));
        }
    }
    None
}

/// HTML5 numeric character reference rules, as Python's `html._replace_charref`.
fn numeric_reference(n: u64) -> String {
    if n == 0 {
        return '\u{fffd}'.to_string();
    }
    if n == 0x0d {
        return "\r".to_string();
    }
    if (0x80..=0x9f).contains(&n) {
        let c = char::from_u32(n as u32).unwrap_or('\u{fffd}');
        let mapped = C1_CP1252
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(c, |(_, v)| *v);
        return mapped.to_string();
    }
    if (0xd800..=0xdfff).contains(&n) || n > 0x10ffff {
        return '\u{fffd}'.to_string();
    }
    let invalid = matches!(n, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (n & 0xfffe) == 0xfffe;
    if invalid {
        return String::new();
    }
    char::from_u32(n as u32).map_or_else(|| '\u{fffd}'.to_string(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_unescape_like_python() {
        assert_eq!(html_unescape("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
        assert_eq!(html_unescape("&#39;a&#x27;"), "'a'");
        assert_eq!(
            html_unescape("&eacute &ampx &nosuch; & x"),
            "é &x &nosuch; & x"
        );
        assert_eq!(html_unescape("&#0;&#128;&#1;"), "\u{fffd}€");
    }

    #[test]
    fn ftfy_unescape_repeats_and_respects_html() {
        assert_eq!(fix_text("&amp;amp; x"), "& x");
        assert_eq!(fix_text("&lt;b&gt;"), "<b>");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("&EACUTE;"), "É");
        assert_eq!(fix_text("&eacute"), "&eacute");
    }

    #[test]
    fn ftfy_character_fixes() {
        assert_eq!(fix_text("ﬁne ﬂow"), "fine flow");
        assert_eq!(fix_text("ＡＢＣ１２３\u{3000}x"), "ABC123 x");
        assert_eq!(fix_text("“q” ‘a’"), "\"q\" 'a'");
        assert_eq!(fix_text("a\r\nb\u{1b}[31mc\u{feff}"), "a\nbc");
        assert_eq!(fix_text("e\u{301}"), "é");
    }

    #[test]
    fn clean_modes() {
        assert_eq!(clean_text("  A\tB\n ", CleanMode::Ftfy), "a b");
        assert_eq!(clean_text("ΣΊΣΥΦΟΣ", CleanMode::Ftfy), "σίσυφος");
        assert_eq!(
            clean_text("<i>&amp;amp;</i>", CleanMode::OpenClip),
            "<i>&</i>"
        );
        assert_eq!(clean_text(" A ", CleanMode::None), " A ");
    }
}
