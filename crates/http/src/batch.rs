//! `POST /api/v1/events/batch`: up to [`MAX_BATCH_EVENTS`] purchases, refunds and custom events
//! in one request, each with its own answer. The events run concurrently, so they share the
//! store's group commits; one refused event never affects the others.
//!
//! With an `Idempotency-Key`, each event is recorded under `KEY#INDEX` with a hash of its own
//! body: a retried batch replays every event that was recorded and runs the rest.
//!
//! Each event's answer is written as JSON text once, straight from its outcome, and the
//! answers are joined into the response: building them as `serde_json::Value` trees first and
//! serializing those was a quarter of the request's CPU with 100 purchases a request.

use crate::AppState;
use crate::extract::{Auth, Write, json_problem};
use crate::problem::Problem;
use crate::wire::{money, to_value};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fidelis_app::{App, AppError, Principal};
use fidelis_core::event::{CustomInput, PurchaseInput, RefundInput};
use fidelis_store::IdemKey;
use serde::Deserialize;
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

/// Events accepted in one batch request.
pub const MAX_BATCH_EVENTS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// Each event's JSON text, parsed straight into its input once its `type` is known.
    events: Vec<Box<RawValue>>,
}

/// An event's `type`, read before the rest.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: Option<Value>,
}

/// `T` from an event's text, leaving out the event's `type` member (the batch's, not the
/// input's: a purchase or a refund has no `type`), each failure named by its field's path
/// (tracked only when a first parse fails, as `extract::parse_json` does).
fn input<T: DeserializeOwned>(event: &str) -> Result<T, Problem> {
    T::deserialize(WithoutType(&mut serde_json::Deserializer::from_str(event))).or_else(|_| {
        let mut de = serde_json::Deserializer::from_str(event);
        serde_path_to_error::deserialize(WithoutType(&mut de)).map_err(json_problem)
    })
}

/// A deserializer of a JSON object that skips its `type` member.
struct WithoutType<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for WithoutType<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(SkipType(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, SkipType(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The visitor of [`WithoutType`]: hands the object on without its `type`.
struct SkipType<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for SkipType<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(SkipTypeMap(map))
    }
}

struct SkipTypeMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipTypeMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<String>()? {
            if key == "type" {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return seed
                .deserialize(serde::de::value::StringDeserializer::new(key))
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// `v` as JSON text. Serializing our own plain structs cannot fail; `null` would show it did.
fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// One event's answer: `(status, body as JSON text)`.
async fn one(
    app: std::sync::Arc<App>,
    p: Principal,
    event: Box<RawValue>,
    idem: Option<IdemKey>,
) -> (StatusCode, String) {
    let event = event.get();
    // An event that is not an object, or whose `type` is not text, has no type.
    let kind = serde_json::from_str::<Kind>(event)
        .ok()
        .and_then(|k| k.kind)
        .and_then(|t| t.as_str().map(str::to_string));
    let result: Result<(StatusCode, String), Problem> = async {
        match kind.as_deref() {
            Some("purchase") => {
                let input: PurchaseInput = input(event)?;
                let (out, _) = app.purchase(&p, input, idem).await?;
                let status = if out.duplicate {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok((status, text(&out)))
            }
            Some("refund") => {
                let input: RefundInput = input(event)?;
                let (out, _) = app.refund(&p, input, idem).await?;
                let (settings, _) = app.program(&p).await?;
                let status = if out.duplicate {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok((status, text(&money(to_value(&out), settings.currency))))
            }
            Some(_) => {
                // Any other type is a custom event of that type, which its input holds.
                let input: CustomInput = serde_json::from_str(event).or_else(|_| {
                    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(event))
                        .map_err(json_problem)
                })?;
                let (out, _) = app.custom(&p, input, idem).await?;
                Ok((StatusCode::CREATED, text(&out)))
            }
            None => Err(Problem::invalid(
                "type",
                "each event needs a `type`: purchase, refund, or a custom event type",
            )),
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(problem) => (problem.status, text(&problem.to_json())),
    }
}

pub async fn batch(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<BatchInput>,
) -> Result<Response, Problem> {
    let events = w.body.events;
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(Problem::invalid(
            "events",
            format!("give 1 to {MAX_BATCH_EVENTS} events, got {}", events.len()),
        ));
    }
    // Refuse a key without the right to write events before running anything.
    if p.scope == fidelis_app::Scope::Analytics {
        return Err(AppError::Forbidden(
            "recording events needs a key with scope admin, pos or ecommerce".into(),
        )
        .into());
    }
    let mut set = JoinSet::new();
    for (i, event) in events.into_iter().enumerate() {
        let idem = w.idem.as_ref().map(|k| {
            // The hash of the event as a JSON value written back out (keys in order, no
            // spaces), as it always was: a retry that spaces or orders its members otherwise
            // is the same event.
            let value: Value = serde_json::from_str(event.get()).unwrap_or(Value::Null);
            let mut h = Sha256::new();
            h.update(b"batch-event\n");
            h.update(value.to_string().as_bytes());
            IdemKey {
                key: format!("{}#{i}", k.key),
                request_hash: hex::encode(h.finalize()),
            }
        });
        let (app, p) = (s.app.clone(), p.clone());
        set.spawn(async move { (i, one(app, p, event, idem).await) });
    }
    let mut results: Vec<(usize, StatusCode, String)> = Vec::with_capacity(set.len());
    while let Some(done) = set.join_next().await {
        match done {
            Ok((i, (status, body))) => results.push((i, status, body)),
            Err(e) => {
                return Err(AppError::Internal(format!("a batch event's task failed: {e}")).into());
            }
        }
    }
    results.sort_by_key(|r| r.0);
    let failed = results.iter().filter(|r| !r.1.is_success()).count();
    // `{"results": [{"index": I, "status": S, "body": ...}, ...], "failed": N}`, each body
    // already JSON text.
    let mut body =
        String::with_capacity(results.iter().map(|r| r.2.len() + 40).sum::<usize>() + 32);
    body.push_str("{\"results\":[");
    for (k, (i, status, answer)) in results.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"index\":{i},\"status\":{},\"body\":",
            status.as_u16()
        ));
        body.push_str(answer);
        body.push('}');
    }
    body.push_str(&format!("],\"failed\":{failed}}}"));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
