//! The report: each [`Figure`] beside its limit as a ratio, printed as a
//! table and written, with the details of every phase, to
//! `bench/results/<date>.json`. Earlier results are compared with that
//! JSON, so its shape is built in this one place.

use std::path::{Path, PathBuf};

/// One figure of the report.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What it is held against, and that limit's value in the same unit.
    pub limit: String,
    pub limit_value: f64,
    /// The floor and aim for value / limit_value, and whether lower
    /// is better (a time, a size) or higher (a rate).
    pub floor: f64,
    pub aim: f64,
    pub lower_is_better: bool,
}

impl Figure {
    fn ratio(&self) -> f64 {
        self.value / self.limit_value
    }

    fn meets_floor(&self) -> bool {
        if self.lower_is_better {
            self.ratio() <= self.floor
        } else {
            self.ratio() >= self.floor
        }
    }
}

pub fn report(
    figures: &[Figure],
    details: serde_json::Map<String, serde_json::Value>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    println!(
        "\n{:<44} {:>10} {:>6}  {:<46} {:>7} {:>7} {:>6}",
        "figure", "value", "", "held against", "ratio", "floor", "meets"
    );
    for f in figures {
        println!(
            "{:<44} {:>10.2} {:>6}  {:<46} {:>7.3} {:>7} {:>6}",
            f.name,
            f.value,
            f.unit,
            f.limit,
            f.ratio(),
            if f.floor > 0.0 {
                format!("{}{}", if f.lower_is_better { "≤" } else { "≥" }, f.floor)
            } else {
                "-".into()
            },
            if f.floor > 0.0 {
                if f.meets_floor() { "yes" } else { "NO" }
            } else {
                ""
            }
        );
    }
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{date}.json")));
    let json = serde_json::json!({
        "date": date,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "figures": figures.iter().map(|f| serde_json::json!({
            "name": f.name, "value": f.value, "unit": f.unit, "limit": f.limit,
            "limit_value": f.limit_value, "ratio": f.ratio(), "floor": f.floor,
            "aim": f.aim, "lower_is_better": f.lower_is_better,
            "meets_floor": f.floor <= 0.0 || f.meets_floor(),
        })).collect::<Vec<_>>(),
        "details": details,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("written to {}", path.display());
    Ok(())
}
