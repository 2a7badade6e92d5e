//! Showing text from Redis on a terminal without letting it drive the terminal.
//!
//! Anything in the queue may be hostile: control characters, ANSI escape
//! sequences, bidirectional overrides that reorder what the reader sees. They
//! are shown escaped (`\n`, `\x1b`, `\u{202e}`); a backslash is doubled so the
//! escaped form is unambiguous. Printable text, any script, passes unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as itself.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\\'
            // bidirectional marks, embeddings, overrides and isolates
            | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // invisible characters and line breaks other than \n
            | '\u{00ad}' | '\u{180e}' | '\u{200b}'..='\u{200d}' | '\u{2028}' | '\u{2029}'
            | '\u{2060}'..='\u{2065}' | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
            // tag characters, which can hide a whole text from the reader
            | '\u{e0000}'..='\u{e007f}')
}

/// `text` with every character that could act on a terminal shown escaped.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes that may not be UTF-8, shown like [`for_terminal`]; invalid bytes as `\xNN`.
pub fn bytes_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&for_terminal(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// JSON text (as serde_json writes it, control characters already escaped)
/// with the bidirectional and invisible characters escaped too, as `\uXXXX`:
/// the same JSON value, safe to show on a terminal.
pub fn json_for_terminal(json: String) -> String {
    if !json.chars().any(|c| c != '\\' && needs_escape(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if c != '\\' && needs_escape(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_passes_unchanged() {
        for text in ["lorem ipsum", "Grüße, 東京, مرحبا", "emoji 🦀", ""] {
            assert_eq!(for_terminal(text), text);
        }
    }

    #[test]
    fn control_characters_and_escapes_are_shown_escaped() {
        assert_eq!(for_terminal("a\u{1b}[31mred"), "a\\x1b[31mred");
        assert_eq!(for_terminal("line\nnext\r\t"), "line\\nnext\\r\\t");
        assert_eq!(for_terminal("\u{7}\u{7f}\u{9b}"), "\\x07\\x7f\\x9b");
        assert_eq!(for_terminal("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(for_terminal("back\\slash"), "back\\\\slash");
        assert_eq!(for_terminal("a\u{2061}b\u{e0041}"), "a\\u{2061}b\\u{e0041}");
    }

    #[test]
    fn escaped_output_holds_no_control_character() {
        let hostile: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let shown = for_terminal(&hostile);
        assert!(!shown.chars().any(|c| c != '\\' && needs_escape(c)));
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_bidi_characters() {
        let json = serde_json::to_string("a\u{202e}b\u{1b}").unwrap();
        let safe = json_for_terminal(json);
        assert_eq!(safe, "\"a\\u202eb\\u001b\"");
        assert_eq!(
            serde_json::from_str::<String>(&safe).unwrap(),
            "a\u{202e}b\u{1b}"
        );
    }

    #[test]
    fn invalid_utf8_is_shown_as_hex() {
        assert_eq!(bytes_for_terminal(b"ok\xff\x1b"), "ok\\xff\\x1b");
    }
}
