//! What changes between two plans: options, budgets, each device's line items, and the units
//! that move. Used by `stowage plan --diff 'OPTIONS'` and `stowage diff A.json B.json`.

use std::io::Write;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Map, Value, json};
use stowage::format_bytes;

use stowage::planner::summarize_names;

/// The device `name` falls under in a plan's `device_map` (the longest prefix entry), or, when
/// the map is finer than `name`, the one device all its entries share; `None` when they differ.
fn device_in(map: &Map<String, Value>, name: &str) -> Option<Value> {
    let mut key = name;
    loop {
        if let Some(d) = map.get(key) {
            return Some(d.clone());
        }
        if key.is_empty() {
            break;
        }
        key = key.rsplit_once('.').map_or("", |(p, _)| p);
    }
    let prefix = format!("{name}.");
    let mut found: Option<&Value> = None;
    for (k, d) in map.iter().filter(|(k, _)| k.starts_with(&prefix)) {
        match found {
            Some(f) if f != d => return None,
            _ => found = Some(d),
        }
        let _ = k;
    }
    found.cloned()
}

fn show(d: &Option<Value>) -> String {
    match d {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "mixed".into(),
    }
}

/// The differences between plans `a` and `b` (both in the `--json` shape) as JSON.
pub fn diff_json(a: &Value, b: &Value) -> anyhow::Result<Value> {
    let obj = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut options = Map::new();
    for key in ["model", "strategy", "dtype"] {
        if a.get(key) != b.get(key) {
            options.insert(key.into(), json!([a.get(key), b.get(key)]));
        }
    }
    let (oa, ob) = (obj(a, "options"), obj(b, "options"));
    for (k, vb) in &ob {
        if oa.get(k) != Some(vb) {
            options.insert(k.clone(), json!([oa.get(k), vb]));
        }
    }
    let devices = |v: &Value| {
        v.get("devices")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (da, db) = (devices(a), devices(b));
    let mut rows = Vec::new();
    let mut keys: Vec<Value> = da
        .iter()
        .chain(&db)
        .filter_map(|d| d.get("device").cloned())
        .collect();
    keys.dedup();
    let mut seen = Vec::new();
    for key in keys {
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let find = |ds: &[Value]| ds.iter().find(|d| d.get("device") == Some(&key)).cloned();
        let (x, y) = (find(&da), find(&db));
        let field = |d: &Option<Value>, f: &str| {
            d.as_ref()
                .and_then(|d| d.get(f))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let fields = ["budget_bytes", "used_bytes", "kv_cache_bytes", "free_bytes"];
        if fields.iter().any(|f| field(&x, f) != field(&y, f)) || x.is_none() != y.is_none() {
            let mut row = Map::new();
            row.insert("device".into(), key.clone());
            for f in fields {
                row.insert(f.into(), json!([field(&x, f), field(&y, f)]));
            }
            rows.push(Value::Object(row));
        }
    }
    let map_a = obj(a, "device_map");
    let units = b
        .get("units")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut moves = Vec::new();
    for u in &units {
        let name = u.get("name").and_then(Value::as_str).unwrap_or("");
        let to = u.get("device").cloned();
        let from = device_in(&map_a, name);
        if from != to {
            moves.push(json!({"unit": name, "from": from, "to": to}));
        }
    }
    Ok(json!({ "options": options, "devices": rows, "moves": moves }))
}

/// Writes the differences between plans `a` and `b`, as a table or as JSON.
pub fn write_diff(w: &mut impl Write, a: &Value, b: &Value, as_json: bool) -> anyhow::Result<()> {
    let d = diff_json(a, b)?;
    if as_json {
        serde_json::to_writer_pretty(&mut *w, &d)?;
        writeln!(w)?;
        return Ok(());
    }
    let options = d["options"].as_object().cloned().unwrap_or_default();
    if options.is_empty() {
        writeln!(w, "same options")?;
    }
    for (k, v) in &options {
        writeln!(w, "{k}: {} → {}", v[0], v[1])?;
    }
    let rows = d["devices"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        writeln!(w, "every device holds the same")?;
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).force_no_tty();
        table.set_header(["device", "budget", "weights", "kv cache", "free"]);
        for r in &rows {
            let pair = |f: &str| {
                let (x, y) = (r[f][0].as_u64().unwrap_or(0), r[f][1].as_u64().unwrap_or(0));
                let text = if x == y {
                    format_bytes(x)
                } else {
                    format!("{} → {}", format_bytes(x), format_bytes(y))
                };
                Cell::new(text).set_alignment(CellAlignment::Right)
            };
            let device = match &r["device"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            table.add_row(vec![
                Cell::new(device),
                pair("budget_bytes"),
                pair("used_bytes"),
                pair("kv_cache_bytes"),
                pair("free_bytes"),
            ]);
        }
        writeln!(w, "{table}")?;
    }
    let moves = d["moves"].as_array().cloned().unwrap_or_default();
    if moves.is_empty() {
        writeln!(w, "no unit moves")?;
    }
    // Consecutive moves between the same devices print as one line.
    let mut i = 0;
    while i < moves.len() {
        let key = (&moves[i]["from"], &moves[i]["to"]);
        let mut j = i;
        while j < moves.len() && (&moves[j]["from"], &moves[j]["to"]) == key {
            j += 1;
        }
        let names = summarize_names(moves[i..j].iter().filter_map(|m| m["unit"].as_str()));
        let from = show(&(!key.0.is_null()).then(|| key.0.clone()));
        writeln!(w, "{names}: {from} → {}", show(&Some(key.1.clone())))?;
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finer_or_coarser_maps_resolve() {
        let map = json!({"model.layers.0": 0, "model.layers.1": 1, "lm_head": "cpu"});
        let map = map.as_object().unwrap();
        assert_eq!(device_in(map, "model.layers.0.mlp"), Some(json!(0)));
        assert_eq!(
            device_in(map, "model.layers"),
            None,
            "split over two devices"
        );
        assert_eq!(device_in(map, "lm_head"), Some(json!("cpu")));
    }
}
