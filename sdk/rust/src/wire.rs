//! The wire types of the HTTP API (openapi.json) that the SDK uses, as serde structs.
//!
//! Field names follow the API's camelCase. A test (`tests/contract.rs`) checks these types
//! against the repository's openapi.json, so a change of the contract fails `cargo test`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A settled task, as a durable wait returns it: `result` when it succeeded, else `error`
/// (`{name, message, ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The task's id.
    pub task_id: String,
    /// `succeeded`, `failed`, `cancelled` or `skipped`.
    pub state: String,
    /// The result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl Outcome {
    /// Whether the task succeeded.
    pub fn ok(&self) -> bool {
        self.state == "succeeded"
    }
}
