//! MirrorMaker 2's internal records, parsed (Kafka's struct encoding, big-endian):
//! checkpoints (`<source>.checkpoints.internal` in the target region: a group's committed
//! offset upstream and the offset of the same record downstream) and offset syncs
//! (`mm2-offset-syncs.<target>.internal` in the source region: how far a partition has
//! been copied). A record that does not parse is `None`, never a panic.

/// One MirrorMaker 2 checkpoint: `upstream` in A is `downstream` in B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub upstream: i64,
    pub downstream: i64,
    pub timestamp_ms: i64,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn string(b: &mut &[u8]) -> Option<String> {
    let len = i16::from_be_bytes(take(b, 2)?.try_into().ok()?);
    String::from_utf8(take(b, usize::try_from(len).ok()?)?.to_vec()).ok()
}

/// Parses MirrorMaker 2's checkpoint record (Kafka's struct encoding: key = group, topic,
/// partition; value = version, upstream offset, downstream offset, metadata).
pub fn parse_checkpoint(key: &[u8], value: &[u8], timestamp_ms: i64) -> Option<Checkpoint> {
    let mut k = key;
    let group = string(&mut k)?;
    let topic = string(&mut k)?;
    let partition = i32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?);
    let mut v = value;
    let version = i16::from_be_bytes(take(&mut v, 2)?.try_into().ok()?);
    if version != 0 {
        return None;
    }
    let upstream = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    let downstream = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    Some(Checkpoint { group, topic, partition, upstream, downstream, timestamp_ms })
}

/// (topic, partition, upstream offset) of a MirrorMaker 2 offset sync.
pub fn parse_offset_sync(key: &[u8], value: &[u8]) -> Option<(String, i32, i64)> {
    let mut k = key;
    let topic = string(&mut k)?;
    let partition = i32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?);
    let mut v = value;
    let upstream = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    Some((topic, partition, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrormaker_checkpoints() {
        let mut key = Vec::new();
        for s in ["acct", "privacy.spend"] {
            key.extend_from_slice(&(s.len() as i16).to_be_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        key.extend_from_slice(&2i32.to_be_bytes());
        let mut value = 0i16.to_be_bytes().to_vec();
        value.extend_from_slice(&120i64.to_be_bytes());
        value.extend_from_slice(&97i64.to_be_bytes());
        value.extend_from_slice(&0i16.to_be_bytes());
        let c = parse_checkpoint(&key, &value, 5).unwrap();
        assert_eq!(
            (c.group.as_str(), c.topic.as_str(), c.partition, c.upstream, c.downstream),
            ("acct", "privacy.spend", 2, 120, 97)
        );
        assert_eq!(parse_checkpoint(&key[..5], &value, 0), None);
        assert_eq!(parse_checkpoint(&key, &value[..10], 0), None);
    }

    #[test]
    fn parses_mirrormaker_offset_syncs() {
        let mut key = (13i16).to_be_bytes().to_vec();
        key.extend_from_slice(b"privacy.spend");
        key.extend_from_slice(&1i32.to_be_bytes());
        let mut value = 41i64.to_be_bytes().to_vec();
        value.extend_from_slice(&77i64.to_be_bytes());
        assert_eq!(parse_offset_sync(&key, &value), Some(("privacy.spend".into(), 1, 41)));
        assert_eq!(parse_offset_sync(&key[..4], &value), None);
        assert_eq!(parse_offset_sync(&key, &value[..4]), None);
    }
}
