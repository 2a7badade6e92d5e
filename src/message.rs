//! The records that travel through Redis: messages in the queue, error
//! records and dead-letter records.
//!
//! The queue holds JSON. The fenced enqueue script writes the `seq` field
//! itself, so the generator encodes everything after it ([`Message::encode_after_seq`]).

use serde::{Deserialize, Serialize};

/// One generated message, as it sits in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub epoch: u64,
    /// Id of the copy that generated it.
    pub producer: String,
    pub text: String,
    pub generated_at_ms: u64,
    /// How many earlier deliveries ended without an ack (written by the janitor).
    #[serde(default)]
    pub deliveries: u32,
}

/// The fields of a message that the generator chooses; `seq` comes from Redis.
#[derive(Debug, Serialize)]
pub struct NewMessage<'a> {
    pub epoch: u64,
    pub producer: &'a str,
    pub text: &'a str,
    pub generated_at_ms: u64,
}

impl NewMessage<'_> {
    /// The JSON object without its opening brace, led by a comma: the enqueue
    /// script writes `{"seq":N` in front of it.
    pub fn encode_after_seq(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!(",{}", json.strip_prefix('{').unwrap_or(&json))
    }
}

impl Message {
    /// Decodes a queue item; anything else is an error naming what is wrong.
    pub fn decode(item: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(item).map_err(|e| format!("not a valid message: {e}"))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A message judged to contain an error (docs/SPEC.md §4: the fields of `get-errors --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub seq: u64,
    pub epoch: u64,
    pub producer: String,
    pub text: String,
    pub generated_at_ms: u64,
    /// Id of the copy that processed it.
    pub processor: String,
    pub detected_at_ms: u64,
    /// Which delivery this was: 1 for the first.
    pub deliveries: u32,
}

impl ErrorRecord {
    pub fn new(message: &Message, processor: &str, detected_at_ms: u64) -> Self {
        Self {
            seq: message.seq,
            epoch: message.epoch,
            producer: message.producer.clone(),
            text: message.text.clone(),
            generated_at_ms: message.generated_at_ms,
            processor: processor.to_string(),
            detected_at_ms,
            // A hostile item may carry any count: never overflow.
            deliveries: message.deliveries.saturating_add(1),
        }
    }

    pub fn decode(record: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(record).map_err(|e| format!("not a valid error record: {e}"))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why an item went to dead-letter, and the item itself. The scripts write
/// these (`dead_record` in `scripts/prelude.lua`), byte for byte: `item` may
/// hold bytes that are not UTF-8, so decode with [`DeadRecord::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    pub reason: String,
    pub item: String,
    /// The item's length in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Only the first `--max-item-bytes` of the item were kept.
    #[serde(default)]
    pub truncated: bool,
}

impl DeadRecord {
    /// Decodes a record; bytes of the item that are not UTF-8 become U+FFFD.
    pub fn decode(record: &[u8]) -> Result<Self, String> {
        serde_json::from_str(&String::from_utf8_lossy(record))
            .map_err(|e| format!("not a dead-letter record: {e}"))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (only for records).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_encoded_after_its_seq_decodes_whole() {
        let new = NewMessage {
            epoch: 3,
            producer: "host-1",
            text: "a \"quoted\"\n\u{1b}[31m text",
            generated_at_ms: 1_764_230_000_123,
        };
        let item = format!("{{\"seq\":17{}", new.encode_after_seq());
        let message = Message::decode(item.as_bytes()).unwrap();
        assert_eq!(message.seq, 17);
        assert_eq!(message.epoch, 3);
        assert_eq!(message.text, new.text);
        assert_eq!(message.deliveries, 0);
        assert_eq!(
            Message::decode(message.encode().as_bytes()).unwrap(),
            message
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for item in [
            &b"not json"[..],
            b"",
            b"{}",
            b"[1,2]",
            b"{\"seq\":-1}",
            &[0xff, 0xfe],
        ] {
            assert!(Message::decode(item).is_err());
        }
    }

    #[test]
    fn an_error_record_counts_this_delivery() {
        let message = Message {
            seq: 1,
            epoch: 1,
            producer: "p".into(),
            text: "t".into(),
            generated_at_ms: 5,
            deliveries: 2,
        };
        let record = ErrorRecord::new(&message, "c", 9);
        assert_eq!(record.deliveries, 3);
        assert_eq!(
            ErrorRecord::decode(record.encode().as_bytes()).unwrap(),
            record
        );
    }
}
