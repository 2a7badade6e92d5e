//! Decoding a queue item or an error record from arbitrary bytes never
//! panics, and whatever decodes encodes back to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_ql::message::{ErrorRecord, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let again = Message::decode(message.encode().as_bytes()).expect("an encoded message decodes");
        assert_eq!(again, message);
    }
    if let Ok(record) = ErrorRecord::decode(data) {
        let again = ErrorRecord::decode(record.encode().as_bytes()).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
});
