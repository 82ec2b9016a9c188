//! Encounter files as hospitals export them (NDJSON, or CSV with a header naming the
//! columns), read line by line: a bad line is refused with its number and reason, never
//! silently dropped, and never stops the good ones.

use crate::records::{Encounter, EncounterType};

/// One CSV line into an encounter, by the header's column names.
fn from_csv(header: &[&str], line: &str) -> Result<Encounter, String> {
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    if cells.len() != header.len() {
        return Err(format!("{} columns, the header has {}", cells.len(), header.len()));
    }
    let get = |name: &str| header.iter().position(|h| *h == name).map(|i| cells[i]);
    let need = |name: &str| get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("missing {name}"));
    let int = |name: &str| need(name)?.parse::<i64>().map_err(|_| format!("{name} is not a whole number"));
    let optional = |name: &str| match get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| format!("{name} is not a whole number")),
    };
    let encounter_type = match get("encounter_type").unwrap_or("OTHER") {
        "OUTPATIENT" => EncounterType::Outpatient,
        "INPATIENT" => EncounterType::Inpatient,
        "EMERGENCY" => EncounterType::Emergency,
        "TELEHEALTH" => EncounterType::Telehealth,
        "OTHER" | "" => EncounterType::Other,
        other => return Err(format!("unknown encounter_type {other}")),
    };
    Ok(Encounter {
        event_id: need("event_id")?.to_string(),
        hospital_id: need("hospital_id")?.to_string(),
        encounter_ref: need("encounter_ref")?.to_string(),
        clinician_ref: need("clinician_ref")?.to_string(),
        occurred_at: int("occurred_at")?,
        encounter_type,
        soap_sections_expected: int("soap_sections_expected")? as i32,
        soap_sections_completed: int("soap_sections_completed")? as i32,
        generation_ms: int("generation_ms")?,
        physician_rating: optional("physician_rating")?.map(|r| r as i32),
        model_version: optional("model_version")?,
    })
}

/// Lines a file read refused: (line number, reason).
pub type Refused = Vec<(usize, String)>;

/// The encounters of a file's text (CSV with a header line when `csv`, else one JSON
/// object a line), each checked by [`crate::validate::encounter`], and the lines refused
/// with their numbers (1-based). Blank lines are skipped.
pub fn parse(text: &str, csv: bool) -> (Vec<Encounter>, Refused) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut header: Option<Vec<&str>> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = if csv {
            match &header {
                None => {
                    header = Some(line.split(',').map(str::trim).collect());
                    continue;
                }
                Some(h) => from_csv(h, line),
            }
        } else {
            serde_json::from_str::<Encounter>(line).map_err(|e| e.to_string())
        };
        match parsed.and_then(|e| crate::validate::encounter(&e).map(|_| e)) {
            Ok(e) => good.push(e),
            Err(why) => bad.push((n, why)),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_are_read_and_bad_ones_refused_with_their_numbers() {
        let csv = "event_id,hospital_id,encounter_ref,clinician_ref,occurred_at,encounter_type,soap_sections_expected,soap_sections_completed,generation_ms,physician_rating,model_version
e1,h001,r1,c1,1700000000000,OUTPATIENT,4,4,1200,5,
e2,h001,r2,c1,1700000000001,SURGERY,4,4,1200,,

e3,h001,r3,c1,1700000000002,,4,5,1200,,
e4,h001,r4,c1,1700000000003,TELEHEALTH,4,3,900,,7
";
        let (good, bad) = parse(csv, true);
        assert_eq!(good.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["e1", "e4"]);
        assert_eq!(good[1].model_version, Some(7));
        assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [3, 5]);
        assert!(bad[0].1.contains("SURGERY") && bad[1].1.contains("SOAP"), "{bad:?}");
        let (good, bad) = parse(&format!("{}\nnot json\n", serde_json::to_string(&good[0]).unwrap()), false);
        assert_eq!((good.len(), bad.len(), bad[0].0), (1, 1, 2));
    }
}
