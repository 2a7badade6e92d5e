//! Parsing a config file from arbitrary bytes never panics, and every error
//! is one line that names the line of the file or the option.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_ql::settings::FileConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Every key and value is checked as the file is read: a file that
    // parses holds only valid settings.
    if let Err(e) = FileConfig::parse(text, "fuzz.toml") {
        assert!(!e.0.contains('\n'), "one line: {e}");
        assert!(e.0.starts_with("config file fuzz.toml"), "names the file: {e}");
    }
});
