//! The key layout of one namespace.
//!
//! Every key starts with `{namespace}:`. The braces make the namespace the
//! hash tag, so all keys of a namespace live in one Redis Cluster slot and
//! every script may touch any of them. Two namespaces never share a key or a
//! channel.

/// The names of all keys and channels of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    namespace: String,
    prefix: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            prefix: format!("{{{namespace}}}:"),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The generator lease: `"<epoch>:<copy id>"` with an expiry.
    pub fn lease(&self) -> String {
        self.key("lease")
    }
    /// Counter of lease acquisitions; its value is the newest epoch.
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }
    /// Counter of accepted messages; its value is the newest `seq`.
    pub fn seq(&self) -> String {
        self.key("seq")
    }
    /// `"<generated_at_ms> <epoch> <producer>"` of the newest message.
    pub fn last_enqueue(&self) -> String {
        self.key("last-enqueue")
    }
    /// Messages waiting: pushed on the left, claimed from the right.
    pub fn queue(&self) -> String {
        self.key("queue")
    }
    /// Messages one copy has claimed and not yet acked.
    pub fn processing(&self, copy_id: &str) -> String {
        self.key(&format!("processing:{copy_id}"))
    }
    /// Exists while the copy is alive; expires a few beats after its last one.
    pub fn heartbeat(&self, copy_id: &str) -> String {
        self.key(&format!("heartbeat:{copy_id}"))
    }
    /// Hash copy id -> description JSON, for `status` and the janitor.
    pub fn registry(&self) -> String {
        self.key("copies")
    }
    /// Held for one janitor period by the copy whose turn it is.
    pub fn janitor_lock(&self) -> String {
        self.key("janitor")
    }
    /// Counter of processed messages, errors included.
    pub fn processed(&self) -> String {
        self.key("processed")
    }
    /// Error records waiting for `get-errors`, newest on the left.
    pub fn errors(&self) -> String {
        self.key("errors")
    }
    /// Counter of error records ever stored.
    pub fn errors_total(&self) -> String {
        self.key("errors-total")
    }
    /// Dead-letter records, newest on the left.
    pub fn dead(&self) -> String {
        self.key("dead")
    }
    /// Errors one `get-errors` run has taken and not yet written out.
    pub fn draining(&self, run_id: &str) -> String {
        self.key(&format!("draining:{run_id}"))
    }
    /// Exists while that `get-errors` run is alive.
    pub fn drain_lock(&self, run_id: &str) -> String {
        self.key(&format!("draining-lock:{run_id}"))
    }
    /// Set of the ids of `get-errors` runs that may hold a draining list.
    pub fn drains(&self) -> String {
        self.key("drains")
    }
    /// Channel: the queue was empty and has messages now (every copy
    /// listens).
    pub fn wake_channel(&self) -> String {
        self.key("wake")
    }
    /// Channel: the queue was empty and has one message now, for the copies
    /// of one shard of [`WAKE_SHARDS`] (each copy listens to one, and the
    /// enqueue falls back on [`Keys::wake_channel`] when nobody listens
    /// there), so that one message does not wake a thousand copies.
    pub fn wake_shard_channel(&self, shard: u32) -> String {
        self.key(&format!("wake:{}", shard % WAKE_SHARDS))
    }
    /// Channel: the lease was released and can be taken at once.
    pub fn lease_channel(&self) -> String {
        self.key("lease-free")
    }
}

/// How many shards the wake-up of a single message is spread over.
pub const WAKE_SHARDS: u32 = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_namespace_as_hash_tag() {
        let keys = Keys::new("ns");
        for key in [
            keys.lease(),
            keys.queue(),
            keys.processing("a-1"),
            keys.heartbeat("a-1"),
            keys.draining("r"),
            keys.wake_channel(),
        ] {
            assert!(key.starts_with("{ns}:"), "{key}");
        }
        assert_ne!(Keys::new("a").queue(), Keys::new("b").queue());
    }
}
