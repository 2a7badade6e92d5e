//! Parsing a config file from arbitrary bytes never panics, and every error
//! is one line that names the line of the file or the option.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_ql::cli::{RedisArgs, StartArgs};
use redis_ql::settings::{self, FileConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match FileConfig::parse(text, "fuzz.toml") {
        Err(e) => {
            assert!(!e.0.contains('\n'), "one line: {e}");
            assert!(e.0.starts_with("config file fuzz.toml"), "names the file: {e}");
        }
        Ok(file) => {
            let (_, defaults) = settings::files(None).expect("the built-in defaults parse");
            for result in [
                settings::redis(&RedisArgs::default(), &file, &defaults).map(|_| ()),
                settings::start(&StartArgs::default(), &file, &defaults).map(|_| ()),
            ] {
                if let Err(e) = result {
                    assert!(!e.0.contains('\n'), "one line: {e}");
                    assert!(e.0.contains("'--"), "names the option: {e}");
                }
            }
        }
    }
});
