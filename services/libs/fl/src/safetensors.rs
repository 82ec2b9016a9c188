//! Reading and writing update vectors as safetensors files (Hugging Face's format: an
//! 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
//! byte range, then the bytes), the other format a site's trainer (PyTorch, JAX) writes.
//!
//! A file is read as one flat vector: every tensor, float32 or float64 little-endian,
//! flattened in the order of its bytes in the file. Everything in the file is checked
//! before it sizes anything: the header length against the file, each tensor's range
//! against the data and its dtype and shape, ranges that overlap or leave gaps.

use std::collections::BTreeMap;

use thiserror::Error;

/// A header longer than this is refused (the format's own readers refuse 100 MB).
pub const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug, Error, PartialEq)]
pub enum SafetensorsError {
    #[error("truncated safetensors file")]
    Truncated,
    #[error("safetensors header: {0}")]
    Header(String),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("value {index} is not finite")]
    NotFinite { index: usize },
}

#[derive(Debug, serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Reads every float32 or float64 tensor of a safetensors file as one flat vector of f32,
/// tensors in the order of their bytes.
pub fn read(bytes: &[u8]) -> Result<Vec<f32>, SafetensorsError> {
    let len = u64::from_le_bytes(bytes.get(..8).ok_or(SafetensorsError::Truncated)?.try_into().expect("8 bytes"));
    if len > MAX_HEADER {
        return Err(SafetensorsError::Header(format!("{len} bytes long (at most {MAX_HEADER})")));
    }
    let header = bytes.get(8..8 + len as usize).ok_or(SafetensorsError::Truncated)?;
    let data = &bytes[8 + len as usize..];
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| SafetensorsError::Header(e.to_string()))?;
    let mut tensors: Vec<(String, Entry)> = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| SafetensorsError::Tensor { name: name.clone(), reason: e.to_string() })?;
        tensors.push((name, entry));
    }
    tensors.sort_by_key(|(_, e)| e.data_offsets);
    let mut out = Vec::new();
    let mut next = 0u64;
    for (name, e) in &tensors {
        let bad = |reason: String| SafetensorsError::Tensor { name: name.clone(), reason };
        let width: u64 = match e.dtype.as_str() {
            "F32" => 4,
            "F64" => 8,
            other => return Err(bad(format!("dtype {other} (F32 or F64 only)"))),
        };
        let [start, end] = e.data_offsets;
        if start != next {
            return Err(bad(format!("starts at byte {start}, expected {next} (gap or overlap)")));
        }
        let count =
            e.shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d)).ok_or_else(|| bad("shape overflows".into()))?;
        let size = count.checked_mul(width).ok_or_else(|| bad("shape overflows".into()))?;
        if end.checked_sub(start) != Some(size) {
            return Err(bad(format!("bytes {start}..{end} do not hold shape {:?} of {}", e.shape, e.dtype)));
        }
        let chunk = data.get(start as usize..end as usize).ok_or(SafetensorsError::Truncated)?;
        if width == 4 {
            out.extend(chunk.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))));
        } else {
            out.extend(chunk.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32));
        }
        next = end;
    }
    if next as usize != data.len() {
        return Err(SafetensorsError::Header(format!("{} bytes after the last tensor", data.len() - next as usize)));
    }
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(SafetensorsError::NotFinite { index });
    }
    Ok(out)
}

/// Writes a flat float32 vector as one tensor `name` of shape `[len]`.
pub fn write(name: &str, values: &[f32]) -> Vec<u8> {
    let header = serde_json::json!({
        name: {"dtype": "F32", "shape": [values.len()], "data_offsets": [0, values.len() * 4]}
    })
    .to_string();
    // Pad the header with spaces so the data starts on an 8-byte boundary.
    let mut header = header.into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + values.len() * 4);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trip_and_several_tensors_in_byte_order() {
        let v = vec![1.5f32, -2.0, 0.25];
        assert_eq!(read(&write("update", &v)).unwrap(), v);
        // Two tensors, listed out of byte order, one float64, with metadata: flattened in
        // the order of their bytes.
        let mut data = Vec::new();
        data.extend_from_slice(&1.0f32.to_le_bytes());
        data.extend_from_slice(&2.0f32.to_le_bytes());
        data.extend_from_slice(&3.0f64.to_le_bytes());
        let h = r#"{"b":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}"#;
        assert_eq!(read(&file(h, &data)).unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn what_a_lying_file_says_is_checked_before_it_sizes_anything() {
        let four = 1.0f32.to_le_bytes();
        let cases: [(&str, &[u8], &str); 7] = [
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &four, "truncated"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8], "gap or overlap"),
            (r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#, &four, "overflows"),
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &four, "do not hold"),
            (r#"{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}"#, &four, "F32 or F64 only"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 8], "after the last tensor"),
            (r#"{"a":"#, &four, "header"),
        ];
        for (header, data, expected) in cases {
            let err = read(&file(header, data)).unwrap_err().to_string();
            assert!(err.contains(expected), "{header}: {err}");
        }
        // A header length past the file, or past the bound.
        let mut huge = (MAX_HEADER + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(matches!(read(&huge), Err(SafetensorsError::Header(_))));
        let mut long = 1000u64.to_le_bytes().to_vec();
        long.extend_from_slice(b"{}");
        assert_eq!(read(&long), Err(SafetensorsError::Truncated));
        assert_eq!(read(&[1, 2, 3]), Err(SafetensorsError::Truncated));
        // Values that are not finite.
        let nan = f32::NAN.to_le_bytes();
        assert_eq!(
            read(&file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &nan)),
            Err(SafetensorsError::NotFinite { index: 0 })
        );
    }

    proptest! {
        #[test]
        fn written_vectors_read_back(v in prop::collection::vec(-1e6f32..1e6, 0..300)) {
            prop_assert_eq!(read(&write("t", &v)).unwrap(), v);
        }

        #[test]
        fn no_input_makes_the_reader_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = read(&bytes);
        }
    }
}
