//! How `warren ctl` prints lists: rabbitmqctl's tab-separated table (a header row unless
//! `--no-table-headers`), or `--formatter json`: an array of objects keyed by column.

use serde_json::{Map, Value};

/// A column: the name rabbitmqctl prints, and where the API object keeps the value.
#[derive(Debug, Clone)]
pub struct Column {
    /// rabbitmqctl's column name.
    pub name: String,
    /// A dotted path into the API object, or a constant (`=exchange`).
    pub path: String,
}

impl Column {
    /// A column read from `path`.
    pub fn new(name: &str, path: &str) -> Column {
        Column { name: name.to_owned(), path: path.to_owned() }
    }

    fn value(&self, item: &Value) -> Value {
        if let Some(constant) = self.path.strip_prefix('=') {
            return Value::from(constant);
        }
        self.path.split('.').try_fold(item, |v, key| v.get(key)).cloned().unwrap_or(Value::Null)
    }
}

/// A cell as rabbitmqctl prints it: strings bare, lists in brackets, tables as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(cell).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The table or JSON for `items`.
pub fn render(items: &[Value], columns: &[Column], json: bool, headers: bool) -> String {
    if json {
        let rows: Vec<Value> = items
            .iter()
            .map(|item| Value::Object(columns.iter().map(|c| (c.name.clone(), c.value(item))).collect::<Map<String, Value>>()))
            .collect();
        return format!("{}\n", Value::Array(rows));
    }
    let mut out = String::new();
    if headers {
        out.push_str(&columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join("\t"));
        out.push('\n');
    }
    for item in items {
        out.push_str(&columns.iter().map(|c| cell(&c.value(item))).collect::<Vec<_>>().join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_tab_separated_with_lists_in_brackets_and_json_keys_are_column_names() {
        let items = vec![json!({"name": "q", "messages": 3, "tags": ["a", "b"], "queue": {"name": "x"}})];
        let cols = [Column::new("name", "name"), Column::new("tags", "tags"), Column::new("queue_name", "queue.name"), Column::new("kind", "=exchange")];
        assert_eq!(render(&items, &cols, false, true), "name\ttags\tqueue_name\tkind\nq\t[a, b]\tx\texchange\n");
        assert_eq!(render(&items, &cols, false, false), "q\t[a, b]\tx\texchange\n");
        assert_eq!(render(&items, &cols[..1], true, true), "[{\"name\":\"q\"}]\n");
    }
}
