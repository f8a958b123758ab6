//! Shapes answers for the wire: money fields kept in minor units inside Fidelis become decimal
//! strings (`lifetime_spend_minor: 12345` → `lifetime_spend: "123.45"`), and replayed writes
//! carry `Idempotent-Replayed: true`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fidelis_core::Currency;
use serde::Serialize;
use serde_json::Value;

/// Rewrites every `<name>_minor` integer of `v` into `<name>` as a decimal string.
pub fn money(mut v: Value, currency: Currency) -> Value {
    rewrite(&mut v, currency);
    v
}

fn rewrite(v: &mut Value, currency: Currency) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map
                .keys()
                .filter(|k| k.ends_with("_minor"))
                .cloned()
                .collect();
            for k in keys {
                if let Some(Value::Number(n)) = map.remove(&k) {
                    let minor = n.as_i64().unwrap_or(0);
                    let name = k.trim_end_matches("_minor").to_string();
                    map.insert(
                        name,
                        Value::String(fidelis_core::money::format_minor(
                            minor,
                            currency.exponent(),
                        )),
                    );
                }
            }
            if map.contains_key("lifetime_spend") {
                map.insert("currency".into(), Value::String(currency.code().into()));
            }
            map.values_mut().for_each(|x| rewrite(x, currency));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| rewrite(x, currency)),
        _ => {}
    }
}

pub fn to_value<T: Serialize>(v: &T) -> Value {
    // Serialising our own plain structs cannot fail; Null would show it did.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A write's answer: `status`, the body, and the replay header when it was replayed.
/// The body is serialized straight to the response (an outcome struct needs no `Value` tree
/// first).
pub fn written(status: StatusCode, body: impl Serialize, replayed: bool) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}
