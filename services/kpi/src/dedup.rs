//! Event-id deduplication for the rollups: which events of a hospital's day were counted.
//!
//! An event is identified by its hospital, the UTC day of its event time and the first
//! 16 bytes of the SHA-256 of its event id (a replayed or mirrored copy carries the same
//! payload, so the same day). PostgreSQL holds, per (hospital, day), a version row and
//! append-only blocks of the digests counted, one block per batch that added any; the
//! service keeps the sets it used recently in memory. Every batch locks the version rows
//! of the days it touches and reads only the blocks written since the version it holds,
//! so another instance's writes (after a rebalance) are never missed, and a batch that
//! rolls back leaves the memory as it was. Storage is 16 bytes per event.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS kpi_seen_days (
    hospital_id  text   NOT NULL,
    day_start_ms bigint NOT NULL,
    version      bigint NOT NULL,
    events       bigint NOT NULL,
    PRIMARY KEY (hospital_id, day_start_ms)
);
CREATE TABLE IF NOT EXISTS kpi_seen_blocks (
    hospital_id  text   NOT NULL,
    day_start_ms bigint NOT NULL,
    version      bigint NOT NULL,
    digests      bytea  NOT NULL,
    PRIMARY KEY (hospital_id, day_start_ms, version)
);";

/// The bytes of an event id's digest kept per event.
pub const DIGEST_BYTES: usize = 16;

pub fn digest(event_id: &str) -> u128 {
    let full = Sha256::digest(event_id.as_bytes());
    let mut first = [0u8; DIGEST_BYTES];
    first.copy_from_slice(&full[..DIGEST_BYTES]);
    u128::from_be_bytes(first)
}

#[derive(Debug, Default)]
struct DaySet {
    /// The version of the day's row these digests are complete up to.
    version: i64,
    digests: HashSet<u128>,
    last_used: u64,
}

/// What a batch adds, made visible in memory only once its transaction committed.
#[derive(Debug)]
struct Pending {
    hospital: String,
    day: i64,
    version: i64,
    digests: Vec<u128>,
}

/// The in-memory side: recently used days, bounded by `capacity` digests in total.
#[derive(Debug)]
pub struct Seen {
    days: HashMap<String, HashMap<i64, DaySet>>,
    capacity: usize,
    held: usize,
    clock: u64,
    pending: Vec<Pending>,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Seen { days: HashMap::new(), capacity, held: 0, clock: 0, pending: Vec::new() }
    }

    /// Inside the batch's transaction: locks the days of `events` (hospital, day, digest),
    /// brings their sets up to date and returns which events are new, in input order (the
    /// first of repeats within the batch counts), and records the new digests as blocks.
    pub async fn admit(
        &mut self,
        tx: &mut PgConnection,
        events: &[(&str, i64, u128)],
    ) -> Result<Vec<bool>, sqlx::Error> {
        self.pending.clear();
        self.clock += 1;
        // The events of each (hospital, day), by index; the days in lock order.
        let mut groups: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
        for (i, (h, d, _)) in events.iter().enumerate() {
            groups.entry((*h, *d)).or_default().push(i);
        }
        let mut touched: Vec<(&str, i64)> = groups.keys().copied().collect();
        touched.sort_unstable();
        let hospitals: Vec<&str> = touched.iter().map(|(h, _)| *h).collect();
        let days: Vec<i64> = touched.iter().map(|(_, d)| *d).collect();
        sqlx::query(
            "INSERT INTO kpi_seen_days (hospital_id, day_start_ms, version, events)
             SELECT h, d, 0, 0 FROM unnest($1::text[], $2::bigint[]) AS x(h, d)
             ON CONFLICT DO NOTHING",
        )
        .bind(&hospitals)
        .bind(&days)
        .execute(&mut *tx)
        .await?;
        let versions: Vec<(String, i64, i64)> = sqlx::query(
            "SELECT s.hospital_id, s.day_start_ms, s.version FROM kpi_seen_days s
             JOIN unnest($1::text[], $2::bigint[]) AS x(h, d) ON s.hospital_id = x.h AND s.day_start_ms = x.d
             ORDER BY s.hospital_id, s.day_start_ms
             FOR UPDATE OF s",
        )
        .bind(&hospitals)
        .bind(&days)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        // Days whose memory is behind the table: read the blocks written since.
        let mut stale: Vec<(String, i64, i64)> = Vec::new();
        for (h, d, version) in &versions {
            let set = self.days.entry(h.clone()).or_default().entry(*d).or_default();
            set.last_used = self.clock;
            if set.version > *version {
                // The table was reset under us (a restored or recreated schema).
                self.held -= set.digests.len();
                *set = DaySet { last_used: self.clock, ..DaySet::default() };
            }
            if set.version < *version {
                stale.push((h.clone(), *d, set.version));
            }
        }
        if !stale.is_empty() {
            let hs: Vec<&str> = stale.iter().map(|s| s.0.as_str()).collect();
            let ds: Vec<i64> = stale.iter().map(|s| s.1).collect();
            let vs: Vec<i64> = stale.iter().map(|s| s.2).collect();
            let blocks = sqlx::query(
                "SELECT b.hospital_id, b.day_start_ms, b.digests FROM kpi_seen_blocks b
                 JOIN unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(h, d, v)
                   ON b.hospital_id = x.h AND b.day_start_ms = x.d AND b.version > x.v",
            )
            .bind(&hs)
            .bind(&ds)
            .bind(&vs)
            .fetch_all(&mut *tx)
            .await?;
            for row in &blocks {
                let h: &str = row.get(0);
                let d: i64 = row.get(1);
                let bytes: &[u8] = row.get(2);
                let set = self.days.get_mut(h).and_then(|m| m.get_mut(&d)).expect("entry made above");
                for chunk in bytes.chunks_exact(DIGEST_BYTES) {
                    if set.digests.insert(u128::from_be_bytes(chunk.try_into().expect("16 bytes"))) {
                        self.held += 1;
                    }
                }
            }
            for (h, d, version) in &versions {
                if let Some(set) = self.days.get_mut(h.as_str()).and_then(|m| m.get_mut(d)) {
                    set.version = *version;
                }
            }
        }
        let version_of: HashMap<(&str, i64), i64> = versions.iter().map(|(h, d, v)| ((h.as_str(), *d), *v)).collect();
        let mut fresh = vec![false; events.len()];
        let mut hs = Vec::new();
        let mut ds = Vec::new();
        let mut vs = Vec::new();
        let mut ns = Vec::new();
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        for (h, d) in touched {
            let known = &self.days.get(h).and_then(|m| m.get(&d)).expect("entry made above").digests;
            let indices = &groups[&(h, d)];
            let mut added: HashSet<u128> = HashSet::with_capacity(indices.len());
            let mut order = Vec::new();
            for &i in indices {
                let digest = events[i].2;
                if !known.contains(&digest) && added.insert(digest) {
                    fresh[i] = true;
                    order.push(digest);
                }
            }
            if order.is_empty() {
                continue;
            }
            let version = version_of[&(h, d)] + 1;
            hs.push(h);
            ds.push(d);
            vs.push(version);
            ns.push(order.len() as i64);
            blobs.push(order.iter().flat_map(|x| x.to_be_bytes()).collect());
            self.pending.push(Pending { hospital: h.to_string(), day: d, version, digests: order });
        }
        if !hs.is_empty() {
            sqlx::query(
                "INSERT INTO kpi_seen_blocks (hospital_id, day_start_ms, version, digests)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[])",
            )
            .bind(&hs)
            .bind(&ds)
            .bind(&vs)
            .bind(&blobs)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE kpi_seen_days s SET version = x.v, events = s.events + x.n
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS x(h, d, v, n)
                 WHERE s.hospital_id = x.h AND s.day_start_ms = x.d",
            )
            .bind(&hs)
            .bind(&ds)
            .bind(&vs)
            .bind(&ns)
            .execute(&mut *tx)
            .await?;
        }
        Ok(fresh)
    }

    /// After the batch's transaction committed: its digests join the sets in memory, and
    /// the least recently used days are let go when over capacity (read again when needed).
    pub fn committed(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            let set = self.days.entry(p.hospital).or_default().entry(p.day).or_default();
            if set.version == p.version - 1 {
                set.version = p.version;
                for d in p.digests {
                    if set.digests.insert(d) {
                        self.held += 1;
                    }
                }
            }
        }
        if self.held <= self.capacity {
            return;
        }
        let mut by_age: Vec<(u64, String, i64)> =
            self.days.iter().flat_map(|(h, m)| m.iter().map(move |(d, s)| (s.last_used, h.clone(), *d))).collect();
        by_age.sort_unstable();
        for (_, h, d) in by_age {
            if self.held <= self.capacity / 2 {
                break;
            }
            if let Some(m) = self.days.get_mut(&h)
                && let Some(set) = m.remove(&d)
            {
                self.held -= set.digests.len();
            }
        }
        self.days.retain(|_, m| !m.is_empty());
    }

    /// Digests held in memory.
    pub fn held(&self) -> usize {
        self.held
    }
}

/// Events seen per hospital (every day's digests counted): what the deduplication holds.
pub async fn seen_per_hospital(pool: &sqlx::PgPool) -> Result<std::collections::BTreeMap<String, i64>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT hospital_id, sum(events)::bigint FROM kpi_seen_days GROUP BY hospital_id")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_first_sixteen_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(digest("abc"), 0xba7816bf_8f01cfea_414140de_5dae2223);
        assert_ne!(digest("e-1"), digest("e-2"));
    }
}
