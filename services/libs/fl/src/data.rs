//! The demo data set (Breast Cancer Wisconsin Diagnostic, CC BY 4.0, shipped in `data/`)
//! and a seeded, non-IID split of it across hospitals with a held-out test split.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Gamma};
use thiserror::Error;

const WDBC: &str = include_str!("../data/wdbc.csv");

#[derive(Debug, Error, PartialEq)]
pub enum DataError {
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("the data set is empty")]
    Empty,
    #[error("cannot split {rows} rows over {hospitals} hospitals with at least {min} rows each")]
    TooSmall { rows: usize, hospitals: usize, min: usize },
}

/// Rows of features with a binary label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub features: Vec<Vec<f32>>,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn width(&self) -> usize {
        self.features.first().map_or(0, Vec::len)
    }

    fn push(&mut self, x: Vec<f32>, y: u8) {
        self.features.push(x);
        self.labels.push(y);
    }

    /// Fraction of rows labelled 1.
    pub fn positive_rate(&self) -> f64 {
        self.labels.iter().filter(|&&y| y == 1).count() as f64 / self.len().max(1) as f64
    }
}

/// Writes rows as CSV (a header line `x1,...,xN,label`, then features and the 0/1 label),
/// what [`parse_csv`] reads back.
pub fn to_csv(ds: &Dataset) -> String {
    let mut out: Vec<String> = (1..=ds.width()).map(|j| format!("x{j}")).collect();
    out.push("label".into());
    let mut text = out.join(",") + "\n";
    for (x, y) in ds.features.iter().zip(&ds.labels) {
        for v in x {
            text.push_str(&v.to_string());
            text.push(',');
        }
        text.push_str(&y.to_string());
        text.push('\n');
    }
    text
}

/// Parses CSV rows of numeric features followed by a 0/1 label. A first line that is not
/// numeric is taken as a header; every other bad line is an error naming its number.
pub fn parse_csv(text: &str) -> Result<Dataset, DataError> {
    let mut ds = Dataset::default();
    let mut width = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f32>, _> = cells.iter().map(|c| c.parse::<f32>()).collect();
        let values = match parsed {
            Ok(v) => v,
            Err(_) if i == 0 => continue,
            Err(e) => return Err(DataError::Line { line: line_no, why: format!("not a number: {e}") }),
        };
        let (label, features) =
            values.split_last().ok_or(DataError::Line { line: line_no, why: "empty row".into() })?;
        let label = match *label {
            0.0 => 0,
            1.0 => 1,
            l => return Err(DataError::Line { line: line_no, why: format!("label must be 0 or 1, got {l}") }),
        };
        if let Some(w) = features.iter().position(|v| !v.is_finite()) {
            return Err(DataError::Line { line: line_no, why: format!("feature {w} is not finite") });
        }
        match width {
            None => width = Some(features.len()),
            Some(w) if w != features.len() => {
                return Err(DataError::Line {
                    line: line_no,
                    why: format!("{} features, earlier rows have {w}", features.len()),
                });
            }
            _ => {}
        }
        ds.push(features.to_vec(), label);
    }
    if ds.is_empty() {
        return Err(DataError::Empty);
    }
    Ok(ds)
}

/// The shipped Breast Cancer Wisconsin (Diagnostic) data: 569 rows, 30 features,
/// label 1 = benign.
pub fn wdbc() -> Dataset {
    parse_csv(WDBC).expect("the shipped data set parses")
}

/// A held-out test split and one training shard per hospital.
#[derive(Debug, Clone)]
pub struct Split {
    pub test: Dataset,
    pub hospitals: Vec<Dataset>,
}

/// Splits `ds`: `test_fraction` of the rows (stratified) are held out; the rest go to
/// `hospitals` shards whose class mix follows a Dirichlet(`alpha`) draw per class (small
/// alpha = strongly non-IID), every shard getting at least 10 rows. Same seed, same split.
pub fn split(ds: &Dataset, hospitals: usize, test_fraction: f64, alpha: f64, seed: u64) -> Result<Split, DataError> {
    const MIN_ROWS: usize = 10;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut test = Dataset::default();
    let mut by_class: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, &y) in ds.labels.iter().enumerate() {
        by_class[y as usize].push(i);
    }
    let mut train: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (class, rows) in by_class.iter_mut().enumerate() {
        rows.shuffle(&mut rng);
        let held = (rows.len() as f64 * test_fraction).round() as usize;
        for &r in &rows[..held] {
            test.push(ds.features[r].clone(), ds.labels[r]);
        }
        train[class] = rows[held..].to_vec();
    }
    let total: usize = train.iter().map(Vec::len).sum();
    if hospitals == 0 || total < hospitals * MIN_ROWS {
        return Err(DataError::TooSmall { rows: total, hospitals, min: MIN_ROWS });
    }
    let gamma = Gamma::new(alpha.max(1e-3), 1.0).expect("positive shape");
    let mut shards = vec![Dataset::default(); hospitals];
    for rows in &train {
        let weights: Vec<f64> = (0..hospitals).map(|_| gamma.sample(&mut rng) + 1e-9).collect();
        let sum: f64 = weights.iter().sum();
        let mut cut = 0usize;
        let mut acc = 0.0;
        for (h, w) in weights.iter().enumerate() {
            acc += w / sum;
            let end = if h + 1 == hospitals { rows.len() } else { (acc * rows.len() as f64).round() as usize };
            for &r in &rows[cut..end.max(cut)] {
                shards[h].push(ds.features[r].clone(), ds.labels[r]);
            }
            cut = end.max(cut);
        }
    }
    // Top up shards below the minimum from the largest one.
    for h in 0..hospitals {
        while shards[h].len() < MIN_ROWS {
            let largest = (0..hospitals).max_by_key(|&i| shards[i].len()).expect("hospitals > 0");
            let pick = rng.random_range(0..shards[largest].len());
            let x = shards[largest].features.swap_remove(pick);
            let y = shards[largest].labels.swap_remove(pick);
            shards[h].push(x, y);
        }
    }
    Ok(Split { test, hospitals: shards })
}

/// Per-feature mean and standard deviation, used to standardise every hospital's rows the
/// same way (for the public demo data they are computed once from its training rows and
/// shipped with the model configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Scaler {
    pub fn fit(parts: &[&Dataset]) -> Self {
        let width = parts.iter().map(|d| d.width()).max().unwrap_or(0);
        let mut sum = vec![0f64; width];
        let mut sq = vec![0f64; width];
        let mut n = 0f64;
        for d in parts {
            for x in &d.features {
                for (j, &v) in x.iter().enumerate() {
                    sum[j] += f64::from(v);
                    sq[j] += f64::from(v) * f64::from(v);
                }
                n += 1.0;
            }
        }
        let n = n.max(1.0);
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sq.iter().zip(&sum).map(|(q, s)| ((q / n - (s / n).powi(2)).max(1e-12).sqrt()) as f32).collect();
        Scaler { mean, std }
    }

    pub fn apply(&self, ds: &Dataset) -> Dataset {
        let features = ds
            .features
            .iter()
            .map(|x| x.iter().zip(self.mean.iter().zip(&self.std)).map(|(v, (m, s))| (v - m) / s).collect())
            .collect();
        Dataset { features, labels: ds.labels.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard written as CSV reads back the same (f32 prints the shortest string that
    /// parses back to the same value).
    #[test]
    fn csv_round_trip() {
        let shard = crate::demo::DemoFederation::new(3).unwrap().shards.remove(1);
        assert_eq!(parse_csv(&to_csv(&shard)).unwrap(), shard);
    }

    #[test]
    fn shipped_data_parses_and_splits_non_iid() {
        let ds = wdbc();
        assert_eq!((ds.len(), ds.width()), (569, 30));
        assert_eq!(ds.labels.iter().filter(|&&y| y == 0).count(), 212);
        let s = split(&ds, 5, 0.2, 0.5, 42).unwrap();
        let train: usize = s.hospitals.iter().map(Dataset::len).sum();
        assert_eq!(train + s.test.len(), 569);
        assert!(s.hospitals.iter().all(|h| h.len() >= 10));
        let rates: Vec<f64> = s.hospitals.iter().map(Dataset::positive_rate).collect();
        let spread = rates.iter().cloned().fold(f64::MIN, f64::max) - rates.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.2, "label mix should differ across hospitals: {rates:?}");
        let again = split(&ds, 5, 0.2, 0.5, 42).unwrap();
        assert_eq!(again.hospitals[3], s.hospitals[3]);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let err = parse_csv("a,b,label\n1,2,0\n1,x,1\n").unwrap_err();
        assert_eq!(err, DataError::Line { line: 3, why: "not a number: invalid float literal".into() });
        let err = parse_csv("1,2,0\n1,2,3\n").unwrap_err();
        assert!(matches!(err, DataError::Line { line: 2, .. }));
        let err = parse_csv("1,2,0\n1,2,3,1\n").unwrap_err();
        assert!(matches!(err, DataError::Line { line: 2, ref why } if why.contains("earlier rows")));
        assert_eq!(parse_csv("").unwrap_err(), DataError::Empty);
    }
}
