//! The query parameters RabbitMQ's list endpoints take: `sort` / `sort_reverse`,
//! `columns` (dotted paths, nested objects kept), and pagination (`page`, `page_size`,
//! `name`, `use_regex`), which wraps the items in RabbitMQ's page object.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::auth::ApiError;

/// RabbitMQ's largest page.
const MAX_PAGE_SIZE: usize = 500;

/// The list parameters of one request.
#[derive(Debug, Default)]
pub struct ListQuery {
    sort: Option<String>,
    reverse: bool,
    columns: Option<Vec<String>>,
    page: Option<(usize, usize)>,
    name: Option<String>,
    regex: bool,
}

impl ListQuery {
    /// Reads the parameters; 400 for a page or page size that is not a positive number.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let invalid = || ApiError::bad_request("Pagination parameters are invalid");
        let number = |key: &str, default: usize| -> Result<usize, ApiError> {
            params.get(key).map_or(Ok(default), |v| v.parse::<usize>().map_err(|_| invalid()))
        };
        // As RabbitMQ: only `page` turns pagination on.
        let page = if params.contains_key("page") {
            let (page, size) = (number("page", 1)?, number("page_size", 100)?);
            if page == 0 || size == 0 || size > MAX_PAGE_SIZE {
                // As RabbitMQ words it: a page size not given is `undefined`.
                let shown = if params.contains_key("page_size") { size.to_string() } else { "undefined".to_owned() };
                return Err(ApiError {
                    status: axum::http::StatusCode::BAD_REQUEST,
                    error: "invalid_pagination_parameters",
                    reason: format!("Invalid pagination parameters: page number {page}, page size {shown}").into(),
                });
            }
            Some((page, size))
        } else {
            None
        };
        Ok(ListQuery {
            sort: params.get("sort").filter(|s| !s.is_empty()).cloned(),
            reverse: params.get("sort_reverse").is_some_and(|v| v == "true"),
            columns: params.get("columns").map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()),
            page,
            name: params.get("name").filter(|s| !s.is_empty()).cloned(),
            regex: params.get("use_regex").is_some_and(|v| v == "true"),
        })
    }

    /// Sorts, filters, pages and projects `items`.
    pub fn apply(&self, mut items: Vec<Value>) -> Result<Value, ApiError> {
        if let Some(key) = &self.sort {
            let path: Vec<&str> = key.split('.').collect();
            items.sort_by(|a, b| compare(lookup(a, &path), lookup(b, &path)));
        }
        if self.reverse {
            items.reverse();
        }
        let Some((page, size)) = self.page else {
            return Ok(Value::Array(items.iter().map(|i| self.project(i)).collect()));
        };
        let total = items.len();
        if let Some(name) = &self.name {
            let re = if self.regex { Some(regex::Regex::new(name).map_err(|_| ApiError::bad_request("Pagination parameters are invalid"))?) } else { None };
            let lower = name.to_lowercase();
            items.retain(|i| {
                let n = i.get("name").and_then(Value::as_str).unwrap_or("");
                match &re {
                    Some(re) => re.is_match(n),
                    // A plain filter is a case-insensitive substring, as RabbitMQ's.
                    None => n.to_lowercase().contains(&lower),
                }
            });
        }
        let filtered = items.len();
        let page_count = filtered.div_ceil(size).max(1);
        if page > page_count {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                error: "page_out_of_range",
                reason: format!("Page out of range, page: {page} page size: {size}, len: {filtered}").into(),
            });
        }
        let shown: Vec<Value> = items.iter().skip((page - 1) * size).take(size).map(|i| self.project(i)).collect();
        Ok(serde_json::json!({
            "filtered_count": filtered,
            "item_count": shown.len(),
            "items": shown,
            "page": page,
            "page_count": page_count,
            "page_size": size,
            "total_count": total,
        }))
    }

    /// One object with only the asked-for columns (all without `columns`).
    pub fn project(&self, item: &Value) -> Value {
        let Some(columns) = &self.columns else { return item.clone() };
        let mut out = Map::new();
        for column in columns {
            let path: Vec<&str> = column.split('.').collect();
            if let Some(v) = lookup(item, &path) {
                insert(&mut out, &path, v.clone());
            }
        }
        Value::Object(out)
    }
}

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn insert(out: &mut Map<String, Value>, path: &[&str], v: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert((*last).to_owned(), v);
        }
        [first, rest @ ..] => {
            let entry = out.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = entry {
                insert(inner, rest, v);
            }
        }
    }
}

/// Missing values first, then numbers, then strings, as RabbitMQ's sort puts them.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        ListQuery::parse(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()).expect("query")
    }

    #[test]
    fn sorts_by_a_dotted_path_pages_and_projects_nested_columns() {
        let items = vec![
            json!({"name": "b", "messages": 2, "message_stats": {"publish": 5, "ack": 1}}),
            json!({"name": "a", "messages": 7}),
            json!({"name": "c", "messages": 1, "message_stats": {"publish": 9}}),
        ];
        let out = query(&[("sort", "message_stats.publish"), ("sort_reverse", "true"), ("columns", "name,message_stats.publish")]).apply(items.clone()).expect("apply");
        assert_eq!(out, json!([{"name": "c", "message_stats": {"publish": 9}}, {"name": "b", "message_stats": {"publish": 5}}, {"name": "a"}]));
        let page = query(&[("page", "2"), ("page_size", "1"), ("name", "^[ab]$"), ("use_regex", "true"), ("sort", "name")]).apply(items.clone()).expect("page");
        assert_eq!(page["items"], json!([{"name": "b", "messages": 2, "message_stats": {"publish": 5, "ack": 1}}]));
        assert_eq!((page["filtered_count"].as_u64(), page["total_count"].as_u64(), page["page_count"].as_u64()), (Some(2), Some(3), Some(2)));
        assert!(query(&[("page", "3"), ("page_size", "1")]).apply(items.clone()).is_ok());
        assert!(query(&[("page", "4"), ("page_size", "1")]).apply(items).is_err());
        assert!(ListQuery::parse(&[("page".to_owned(), "x".to_owned())].into_iter().collect()).is_err());
    }
}
