//! The human-readable forms of the host's answers: the status table, one line per operation,
//! one line per event.

use serde_json::Value;

/// The status table of `services` (the host's service objects).
pub fn status_table(services: &[Value]) -> String {
    let header =
        ["SERVICE", "VERSION", "STATE", "HEALTHY", "GENERATION", "ROLLBACK TO", "COMMITTED"];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for service in services {
        let rollback = service["history"]
            .get(0)
            .map(|g| format!("{} (gen {})", text(&g["version"]), g["generation"]));
        rows.push([
            text(&service["name"]),
            text(&service["version"]),
            text(&service["state"]),
            if service["healthy"].as_bool() == Some(false) { "no" } else { "yes" }.to_owned(),
            service["current"].get("generation").map_or("-".to_owned(), ToString::to_string),
            rollback.unwrap_or_else(|| "-".to_owned()),
            service["committed"].get("version").map_or("-".to_owned(), text),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// One line saying what an operation did, from the host's report.
pub fn operation(report: &Value) -> String {
    let service = text(&report["service"]);
    let status = &report["status"];
    let generation = &report["generation"];
    match report["operation"].as_str().unwrap_or("") {
        "swap" => format!(
            "{service}: swapped {} -> {} (generation {generation}, {:.1} ms)",
            text(&report["from"]),
            text(&report["to"]),
            report["took_ms"].as_f64().unwrap_or(0.0)
        ),
        "rollback" => format!(
            "{service}: rolled back {} -> {} (generation {generation})",
            text(&report["from"]),
            text(&report["to"])
        ),
        "restart" => {
            format!("{service}: restarted {} (generation {generation})", text(&report["to"]))
        }
        "stop" if report["drained"] == Value::Bool(false) => format!(
            "{service}: stopped; calls were still running at the stop deadline, its instance goes when they return"
        ),
        "commit" => format!(
            "{service}: committed {} (a restarted host comes back on it)",
            status["committed"].get("version").map_or_else(|| text(&status["version"]), text)
        ),
        _ => format!("{service}: {} {}", text(&status["state"]), text(&status["version"])),
    }
}

/// One line for an event of the host's stream.
pub fn event(event: &Value) -> String {
    let Value::Object(fields) = event else { return event.to_string() };
    let mut line = vec![text(&event["time"])];
    let head = if event["source"] == "watcher" {
        vec!["source", "event", "service", "version"]
    } else {
        vec!["service", "version", "event"]
    };
    for key in &head {
        if let Some(value) = fields.get(*key).filter(|v| !v.is_null()) {
            line.push(text(value));
        }
    }
    for (key, value) in fields {
        if key != "time" && key != "source" && !head.contains(&key.as_str()) && !value.is_null() {
            line.push(format!("{key}={}", text(value)));
        }
    }
    line.join(" ")
}

/// A JSON value as text: strings without their quotes.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lines_columns_up() {
        let services = [json!({
            "name": "greeter", "version": "1.1.0", "state": "running", "healthy": true,
            "current": {"version": "1.1.0", "generation": 2},
            "history": [{"version": "1.0.0", "generation": 1}],
            "committed": {"version": "1.0.0"},
        })];
        let table = status_table(&services);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SERVICE  VERSION  STATE    HEALTHY  GENERATION"));
        assert!(lines[1].starts_with("greeter  1.1.0    running  yes      2"));
        assert!(lines[1].ends_with("1.0.0 (gen 1)  1.0.0"));
    }

    #[test]
    fn operations_and_events_read_as_sentences() {
        let swap = json!({"service": "greeter", "operation": "swap", "from": "1.0.0",
                          "to": "1.1.0", "generation": 2, "took_ms": 1.25, "status": {}});
        assert_eq!(operation(&swap), "greeter: swapped 1.0.0 -> 1.1.0 (generation 2, 1.2 ms)");
        let pause = json!({"service": "greeter", "operation": "pause",
                           "status": {"state": "paused", "version": "1.0.0"}});
        assert_eq!(operation(&pause), "greeter: paused 1.0.0");
        let swapped = json!({"time": "T", "source": "runtime", "event": "swapped",
                             "service": "greeter", "version": "1.1.0", "from": "1.0.0",
                             "generation": 2});
        assert_eq!(event(&swapped), "T greeter 1.1.0 swapped from=1.0.0 generation=2");
    }
}
