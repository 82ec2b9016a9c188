//! Reading and writing update vectors as NumPy `.npy` files (format versions 1 to 3,
//! little-endian float32 or float64, C order; any shape is read flattened), so a site that
//! trains elsewhere (PyTorch, JAX) can hand the agent its update.

use thiserror::Error;

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Error, PartialEq)]
pub enum NpyError {
    #[error("not a .npy file (bad magic bytes)")]
    Magic,
    #[error("unsupported .npy version {0}")]
    Version(u8),
    #[error("truncated .npy file")]
    Truncated,
    #[error("unsupported .npy header: {0}")]
    Header(String),
    #[error("value {index} is not finite")]
    NotFinite { index: usize },
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// Reads a float32 or float64 array of any shape as a flat vector of f32.
pub fn read(bytes: &[u8]) -> Result<Vec<f32>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::Magic);
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(NpyError::Version(v)),
    };
    let header = bytes.get(start..start + header_len).ok_or(NpyError::Truncated)?;
    let header = std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".into()))?;
    let descr = header_value(header, "descr").ok_or_else(|| NpyError::Header("no descr".into()))?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(NpyError::Header(format!(
            "dtype {} (float32 or float64 little-endian only)",
            descr.split(',').next().unwrap_or("")
        )));
    };
    let fortran = header_value(header, "fortran_order").ok_or_else(|| NpyError::Header("no fortran_order".into()))?;
    if fortran.starts_with("True") {
        return Err(NpyError::Header("Fortran order (save a C-contiguous array)".into()));
    }
    let shape = header_value(header, "shape").ok_or_else(|| NpyError::Header("no shape".into()))?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| NpyError::Header("bad shape".into()))?;
    let count = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| NpyError::Header(format!("bad shape entry {s}"))))
        .try_fold(1usize, |acc, n| n.map(|n| acc.saturating_mul(n)))?;
    let data = &bytes[start + header_len..];
    // The shape is the file's say: its product is checked, never trusted to size anything.
    let size = count.checked_mul(width).ok_or_else(|| NpyError::Header(format!("shape ({shape}) is too large")))?;
    if data.len() < size {
        return Err(NpyError::Truncated);
    }
    let out: Vec<f32> = if width == 4 {
        data[..count * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        data[..count * 8].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
    };
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(NpyError::NotFinite { index });
    }
    Ok(out)
}

/// Writes a flat float32 vector as a version 1.0 `.npy` file.
pub fn write(values: &[f32]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", values.len());
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let v = vec![1.5f32, -2.0, 0.25];
        assert_eq!(read(&write(&v)).unwrap(), v);
        assert_eq!(read(b"nope").unwrap_err(), NpyError::Magic);
        let mut f8 = write(&v);
        let text = String::from_utf8_lossy(&f8[10..f8.len() - 12]).replace("<f4", "<i4");
        f8.splice(10..f8.len() - 12, text.bytes());
        assert!(matches!(read(&f8).unwrap_err(), NpyError::Header(_)));
        let short = write(&v);
        assert_eq!(read(&short[..short.len() - 1]).unwrap_err(), NpyError::Truncated);
    }

    #[test]
    fn a_shape_too_large_to_size_is_an_error_not_an_overflow() {
        // The `npy` fuzz target's find: shape × element width overflowed usize.
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let header =
            format!("{:<117}\n", "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }");
        f.extend_from_slice(&(header.len() as u16).to_le_bytes());
        f.extend_from_slice(header.as_bytes());
        assert!(matches!(read(&f).unwrap_err(), NpyError::Header(h) if h.contains("too large")));
    }
}
