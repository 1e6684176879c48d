//! The crate's wire types against the repository's openapi.json (the contract): for every
//! schema the crate models, an example with every property and one with only the required
//! ones are made from the schema, decoded into the Rust type and encoded again, and must come
//! back unchanged. A renamed, retyped, added required or dropped field fails here.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use dynatask::wire;

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
    let text = std::fs::read_to_string(path).expect("openapi.json at the repository root");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "openapi.json has no schema {name}");
    s
}

/// An example of `s`: with every property (`full`) or only the required ones.
fn example(doc: &Value, s: &Value, full: bool) -> Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap();
        return example(doc, schema(doc, name), full);
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(vs) = s.get(key).and_then(Value::as_array) {
            let null = vs.iter().find(|v| v.get("type") == Some(&json!("null")));
            let other = vs.iter().find(|v| v.get("type") != Some(&json!("null")));
            return match (full, null, other) {
                (false, Some(_), _) | (_, Some(_), None) => Value::Null,
                (_, _, Some(v)) => example(doc, v, full),
                (_, None, None) => unreachable!(),
            };
        }
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => json!("0190b7a0-0000-7000-8000-000000000001"),
        Some("integer") => json!(7),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        Some("array") => json!([example(doc, &s["items"], full)]),
        Some("object") => {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut out = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    if full || required.contains(&k.as_str()) {
                        out.insert(k.clone(), example(doc, p, full));
                    }
                }
            }
            Value::Object(out)
        }
        // "Any JSON value".
        _ => json!({"any": [1, "two", null]}),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str) {
    let doc = openapi();
    for full in [true, false] {
        let ex = example(&doc, schema(&doc, name), full);
        let typed: T = serde_json::from_value(ex.clone()).unwrap_or_else(|e| {
            panic!(
                "{name} ({}): openapi.json's example does not decode into {}: {e}\n{ex:#}",
                if full {
                    "every property"
                } else {
                    "required only"
                },
                std::any::type_name::<T>()
            )
        });
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            back,
            ex,
            "{name} ({}): {} does not encode what openapi.json says",
            if full {
                "every property"
            } else {
                "required only"
            },
            std::any::type_name::<T>()
        );
    }
}

#[test]
fn wire_types_match_openapi_json() {
    round_trip::<wire::Outcome>("Outcome");
    round_trip::<wire::TaskError>("TaskError");
    round_trip::<wire::SubmitOptions>("SubmitOptions");
    round_trip::<wire::SubmitRequest>("SubmitRequest");
    round_trip::<wire::SubmitResult>("SubmitResult");
    round_trip::<wire::JobInfo>("JobInfo");
    round_trip::<wire::JobSummary>("JobSummary");
    round_trip::<wire::JobPage>("JobPage");
    round_trip::<wire::TaskInfo>("TaskInfo");
    round_trip::<wire::TaskPage>("TaskPage");
    round_trip::<wire::AttemptRecord>("AttemptRecord");
    round_trip::<wire::CancelRequest>("CancelRequest");
    round_trip::<wire::CancelResult>("CancelResult");
    round_trip::<wire::RetryRequest>("RetryRequest");
    round_trip::<wire::RetryResult>("RetryResult");
    round_trip::<wire::TypeList>("TypeList");
    round_trip::<wire::Event>("TaskEvent");
    round_trip::<wire::Event>("ProgressEvent");
    round_trip::<wire::Event>("JobEvent");
    // The worker protocol.
    round_trip::<wire::ClaimRequest>("ClaimRequest");
    round_trip::<wire::ClaimedTask>("ClaimedTask");
    round_trip::<wire::ClaimResult>("ClaimResult");
    round_trip::<wire::ReportRequest>("ReportRequest");
    round_trip::<wire::ReportResult>("ReportResult");
    round_trip::<wire::HeartbeatRequest>("HeartbeatRequest");
    round_trip::<wire::HeartbeatResult>("HeartbeatResult");
    round_trip::<wire::ReleaseRequest>("ReleaseRequest");
    round_trip::<wire::ReleaseResult>("ReleaseResult");
    round_trip::<wire::SpawnOptions>("SpawnOptions");
    round_trip::<wire::SpawnRequest>("SpawnRequest");
    round_trip::<wire::SpawnResult>("SpawnResult");
    round_trip::<wire::TaskHandle>("TaskHandle");
    round_trip::<wire::ItemError>("ItemError");
    round_trip::<wire::SpawnItemResult>("SpawnedChildren");
    round_trip::<wire::SpawnItemResult>("ItemError");
    round_trip::<wire::WaitRequest>("WaitRequest");
    round_trip::<wire::WaitResult>("WaitResult");
    round_trip::<wire::WaitItemResult>("WaitSuspended");
    round_trip::<wire::WaitItemResult>("WaitOutcomes");
    round_trip::<wire::WaitItemResult>("ItemError");
    round_trip::<wire::StepGetRequest>("StepGetRequest");
    round_trip::<wire::StepPutRequest>("StepPutRequest");
    round_trip::<wire::StepValue>("StepValue");
    round_trip::<wire::ProgressRequest>("ProgressRequest");
    round_trip::<wire::WorkerStopRequest>("WorkerStopRequest");
    round_trip::<wire::TypeSettingsRequest>("TypeSettingsRequest");
}

/// The answers of the worker calls that return nothing are `{}`, which [`wire::Empty`] reads.
#[test]
fn empty_answers_are_empty_objects() {
    let doc = openapi();
    for path in [
        "/v1/worker/types",
        "/v1/worker/stop",
        "/v1/worker/progress",
        "/v1/worker/steps/put",
    ] {
        let answer = &doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert_eq!(
            answer,
            &json!({"type": "object", "properties": {}}),
            "{path}"
        );
        let ex = example(&doc, answer, true);
        let typed: wire::Empty = serde_json::from_value(ex.clone()).expect(path);
        assert_eq!(serde_json::to_value(typed).unwrap(), ex, "{path}");
    }
}

#[test]
fn every_state_of_the_contract_is_modelled() {
    let doc = openapi();
    for (name, decode) in [
        (
            "JobState",
            (|v: Value| serde_json::from_value::<wire::JobState>(v).map(|_| ())) as fn(Value) -> _,
        ),
        ("TaskState", |v: Value| {
            serde_json::from_value::<wire::TaskState>(v).map(|_| ())
        }),
    ] {
        for v in schema(&doc, name)["enum"].as_array().expect("an enum") {
            decode(v.clone()).unwrap_or_else(|e| panic!("{name} {v}: {e}"));
        }
    }
    // Request bodies the server refuses unknown fields of: so are ours.
    for name in [
        "SubmitRequest",
        "SubmitOptions",
        "CancelRequest",
        "RetryRequest",
        "ClaimRequest",
        "ReportRequest",
        "HeartbeatRequest",
        "ReleaseRequest",
        "SpawnRequest",
        "SpawnOptions",
        "WaitRequest",
        "StepGetRequest",
        "StepPutRequest",
        "ProgressRequest",
        "WorkerStopRequest",
        "TypeSettingsRequest",
    ] {
        assert_eq!(
            schema(&doc, name)["additionalProperties"],
            json!(false),
            "{name}"
        );
    }
}
