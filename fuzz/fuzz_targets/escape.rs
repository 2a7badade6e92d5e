//! The terminal escaping of get-errors lets no control character, escape
//! sequence or bidi override through, for any input, and leaves printable
//! text as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_ql::escape::{bytes_for_terminal, for_terminal, json_for_terminal};

fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}')
}

fuzz_target!(|data: &[u8]| {
    let shown = bytes_for_terminal(data);
    assert!(!shown.chars().any(dangerous), "{shown:?}");
    if let Ok(text) = std::str::from_utf8(data) {
        let shown = for_terminal(text);
        assert!(!shown.chars().any(dangerous), "{shown:?}");
        if !text.chars().any(|c| dangerous(c) || c == '\\') {
            assert_eq!(shown, text, "printable text stays as it was");
        }
        let json = json_for_terminal(serde_json::to_string(text).expect("a string encodes"));
        assert!(!json.chars().any(dangerous), "{json:?}");
        assert_eq!(serde_json::from_str::<String>(&json).expect("still JSON"), text);
    }
});
