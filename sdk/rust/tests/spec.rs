//! The protocol scenarios of spec/scenarios, run by the Rust SDK against a real server, on
//! SQLite and on PostgreSQL.
//!
//! The same JSON files the TypeScript and Python runners run (the format: spec/README.md):
//! each scenario's handlers are data, turned here into handlers of a [`Worker`]. The worker
//! talks to the server through a proxy in this file that can lose answers (the server acted,
//! the connection is cut) and withhold a task's heartbeats (so its lease expires); an
//! observer transport and a raw event stream talk to the server directly. After the job has
//! settled, what happened is compared with the scenario's `expect`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{repo, Store, TestServer};
use dynatask::{Child, Error, Method, TaskContext, TaskHandle, TaskType, Transport, Worker};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(30);

const ACTIONS: &[&str] = &[
    "spawn",
    "spawnMany",
    "waitAll",
    "waitAllSettled",
    "step",
    "progress",
    "return",
    "fail",
    "sleepUntilCancelled",
    "awaitSuspended",
];

/// Every scenario file (each action one this runner knows; the TypeScript and Python runners
/// check the files against spec/scenario.schema.json).
fn scenarios() -> Vec<Value> {
    let dir = repo().join("spec/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("spec/scenarios")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let s: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy();
            assert_eq!(s["name"], *name, "{}: its name", p.display());
            for (t, actions) in s["handlers"].as_object().unwrap() {
                for a in actions.as_array().unwrap() {
                    let known = a["do"].as_str().is_some_and(|d| ACTIONS.contains(&d));
                    assert!(known, "{name}: handler {t}: unknown action {a}");
                }
            }
            s
        })
        .collect()
}

// ------------------------------------------------------------------------------- the proxy

/// Forwards every request to the server; cuts the first answer to each path of `lose` (after
/// the server acted); keeps the heartbeats of the tasks in `withheld` from the server,
/// answering them "ok" as if renewed.
struct Proxy {
    url: String,
    cut: Arc<Mutex<HashSet<String>>>,
    withheld: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ProxyState {
    target: String,
    lose: HashSet<String>,
    cut: Arc<Mutex<HashSet<String>>>,
    withheld: Arc<Mutex<HashSet<String>>>,
    http: reqwest::Client,
}

impl Proxy {
    async fn start(target: &str, lose: HashSet<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(Mutex::new(HashSet::new()));
        let withheld = Arc::new(Mutex::new(HashSet::new()));
        let state = Arc::new(ProxyState {
            target: target.to_owned(),
            lose,
            cut: cut.clone(),
            withheld: withheld.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .unwrap(),
        });
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_connection(conn, state.clone()));
            }
        });
        Proxy {
            url,
            cut,
            withheld,
            task,
        }
    }
}

async fn serve_connection(mut conn: TcpStream, st: Arc<ProxyState>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("GET").to_owned();
        let path = first.next().unwrap_or("/").to_owned();
        let mut headers = Vec::new();
        let mut length = 0usize;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                if matches!(k.as_str(), "content-type" | "authorization" | "accept") {
                    headers.push((k, v));
                }
            }
        }
        while buf.len() < length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let route = path.split('?').next().unwrap_or("").to_owned();
        let withheld: HashSet<String> = st.withheld.lock().unwrap().clone();
        let (status, answer) = if route == "/v1/worker/heartbeat" && !withheld.is_empty() {
            heartbeat(&st, &headers, &body, &withheld).await
        } else {
            match forward(&st, &method, &path, &headers, body).await {
                Some(a) => a,
                None => return,
            }
        };
        let cut = st.lose.contains(&route) && st.cut.lock().unwrap().insert(route.clone());
        if cut {
            let _ = conn.shutdown().await;
            return;
        }
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(&answer).await.is_err()
        {
            return;
        }
    }
}

async fn forward(
    st: &ProxyState,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Option<(u16, Vec<u8>)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
    let mut req = st.http.request(method, format!("{}{path}", st.target));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let res = req.send().await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.bytes().await.ok()?.to_vec()))
}

async fn heartbeat(
    st: &ProxyState,
    headers: &[(String, String)],
    body: &[u8],
    withheld: &HashSet<String>,
) -> (u16, Vec<u8>) {
    let mut parsed: Value = serde_json::from_slice(body).unwrap();
    let items = parsed["items"].as_array().cloned().unwrap_or_default();
    let mut answers = vec![json!("ok"); items.len()];
    let kept: Vec<(usize, Value)> = items
        .into_iter()
        .enumerate()
        .filter(|(_, i)| !withheld.contains(i["id"].as_str().unwrap_or("")))
        .collect();
    if !kept.is_empty() {
        parsed["items"] = Value::Array(kept.iter().map(|(_, i)| i.clone()).collect());
        let body = serde_json::to_vec(&parsed).unwrap();
        let Some((status, answer)) =
            forward(st, "POST", "/v1/worker/heartbeat", headers, body).await
        else {
            return (503, b"{}".to_vec());
        };
        if status != 200 {
            return (status, answer);
        }
        let got: Value = serde_json::from_slice(&answer).unwrap();
        for ((i, _), s) in kept.iter().zip(got["items"].as_array().unwrap()) {
            answers[*i] = s.clone();
        }
    }
    (
        200,
        serde_json::to_vec(&json!({ "items": answers })).unwrap(),
    )
}

// ------------------------------------------------------------------------------- a run

#[derive(Default)]
struct Data {
    runs: HashMap<String, i64>,
    steps: HashMap<String, i64>,
    cancel_seen: HashMap<String, i64>,
    stale_refused: HashMap<String, i64>,
    suspended: HashMap<String, i64>,
    running: HashMap<String, i64>,
    max_running: HashMap<String, i64>,
    starts: Vec<String>,
    active: i64,
    pending: i64,
    problems: Vec<String>,
    paths: HashMap<String, String>,
    events: Vec<Value>,
    fired: HashSet<usize>,
}

/// What the handlers of one scenario did, and a signal of every change.
struct Run {
    data: Mutex<Data>,
    changed: watch::Sender<u64>,
}

impl Run {
    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        let out = f(&mut self.data.lock().unwrap());
        self.changed.send_modify(|n| *n += 1);
        out
    }

    fn inc(&self, which: fn(&mut Data) -> &mut HashMap<String, i64>, key: &str, by: i64) {
        self.with(|d| *which(d).entry(key.to_owned()).or_default() += by);
    }

    async fn until(&self, what: &str, cond: impl Fn(&Data) -> bool) -> Result<(), String> {
        let mut rx = self.changed.subscribe();
        let outcome =
            tokio::time::timeout(TIMEOUT, rx.wait_for(|_| cond(&self.data.lock().unwrap()))).await;
        match outcome {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("timed out waiting for {what}")),
        }
    }
}

/// An expression of the format: JSON with {$ref}, {$sum} and {$count}.
fn evaluate(e: &Value, vars: &HashMap<String, Value>) -> Value {
    match e {
        Value::Array(xs) => Value::Array(xs.iter().map(|x| evaluate(x, vars)).collect()),
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                let mut parts = r.split('.');
                let name = parts.next().unwrap();
                let mut v = vars
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("$ref {r}: no variable {name}"));
                for part in parts {
                    v = match &v {
                        Value::Array(a) => part
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| a.get(i).cloned())
                            .unwrap_or(Value::Null),
                        Value::Object(m) => m.get(part).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                }
                return v;
            }
            if let Some(x) = o.get("$sum") {
                let items = evaluate(x, vars);
                let sum: f64 = items
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(0.0))
                    .sum();
                return if sum.fract() == 0.0 {
                    json!(sum as i64)
                } else {
                    json!(sum)
                };
            }
            if let Some(x) = o.get("$count") {
                return json!(evaluate(x, vars).as_array().map_or(0, Vec::len));
            }
            Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), evaluate(v, vars)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn outcome_view(o: &dynatask::Outcome) -> Value {
    if o.state == "succeeded" {
        json!({"state": o.state, "result": o.result.clone().unwrap_or(Value::Null)})
    } else {
        let name = o
            .error
            .as_ref()
            .and_then(|e| e.get("name"))
            .cloned()
            .unwrap_or(Value::Null);
        json!({"state": o.state, "error": name})
    }
}

fn ms(v: &Value) -> Duration {
    Duration::from_millis(v.as_u64().unwrap())
}

/// One run of a handler given as data: variables, and the handles behind the views bound to
/// them.
struct Performer {
    task_type: String,
    ctx: TaskContext,
    run: Arc<Run>,
    vars: HashMap<String, Value>,
    handles: HashMap<String, Vec<TaskHandle>>,
}

impl Performer {
    fn view(&self, h: &TaskHandle) -> Value {
        self.run.with(|d| {
            if !d.paths.contains_key(&h.id) {
                if let Some(parent) = h.parent_id.as_ref().and_then(|p| d.paths.get(p)).cloned() {
                    d.paths.insert(h.id.clone(), format!("{parent}/{}", h.key));
                }
            }
        });
        let own = h.parent_id.as_deref() == Some(self.ctx.task_id());
        json!({"type": h.task_type, "key": h.key, "created": h.created, "own": own})
    }

    /// The handle a {"$ref": "name"} or {"$ref": "name.i"} names.
    fn handle_ref(&self, r: &Value) -> TaskHandle {
        let r = r["$ref"]
            .as_str()
            .expect("an after entry is a key or a $ref");
        let (name, i) = match r.split_once('.') {
            Some((n, i)) => (n, i.parse::<usize>().unwrap()),
            None => (r, 0),
        };
        self.handles[name][i].clone()
    }

    fn handles_of(&self, names: &Value) -> Option<Vec<TaskHandle>> {
        let names: Vec<&str> = match names {
            Value::Null => return None,
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            other => panic!("handles: {other}"),
        };
        Some(
            names
                .iter()
                .flat_map(|n| self.handles[*n].iter().cloned())
                .collect(),
        )
    }

    fn child(&self, spec: &Value) -> dynatask::Result<Child> {
        let payload = evaluate(&spec["payload"], &self.vars);
        let mut c = Child::new(spec["type"].as_str().unwrap(), &payload)?;
        let o = spec["options"].as_object().cloned().unwrap_or_default();
        for (k, v) in &o {
            c = match k.as_str() {
                "key" => c.key(v.as_str().unwrap()),
                "dedupKey" => c.dedup_key(v.as_str().unwrap()),
                "after" => {
                    let deps: Vec<String> = v
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| match d {
                            Value::String(s) => s.clone(),
                            r => self.handle_ref(r).id,
                        })
                        .collect();
                    c.after(deps)
                }
                "priority" => c.priority(v.as_i64().unwrap() as i32),
                "delayMs" => c.delay(ms(v)),
                "maxAttempts" => c.max_attempts(v.as_u64().unwrap() as u32),
                "backoffMs" => c.backoff(ms(v)),
                "maxBackoffMs" => c.max_backoff(ms(v)),
                "timeoutMs" => c.timeout(ms(v)),
                "concurrency" => c.concurrency(
                    v["key"].as_str().unwrap(),
                    v["limit"].as_u64().unwrap() as u32,
                ),
                "ignoreFailure" if v == &Value::Bool(true) => c.ignore_failure(),
                "runRegardless" if v == &Value::Bool(true) => c.run_regardless(),
                "ignoreFailure" | "runRegardless" => c,
                other => panic!("spawn option {other}"),
            };
        }
        Ok(c)
    }

    fn where_(&self) -> String {
        format!("{} (attempt {})", self.task_type, self.ctx.attempt())
    }

    async fn perform(mut self, actions: &[Value]) -> dynatask::Result<Value> {
        let ctx = self.ctx.clone();
        for a in actions {
            if let Some(on) = a.get("onAttempts") {
                let attempt = json!(ctx.attempt());
                if !on.as_array().unwrap().contains(&attempt) {
                    continue;
                }
            }
            let expect_stale = a["expectStale"] == Value::Bool(true);
            let mut bind: Option<Vec<TaskHandle>> = None;
            let result: dynatask::Result<Value> = match a["do"].as_str().unwrap() {
                "return" => return Ok(evaluate(&a["value"], &self.vars)),
                "fail" => {
                    return Err(Error::Task {
                        name: a["name"].as_str().unwrap().to_owned(),
                        message: a["message"].as_str().unwrap_or("").to_owned(),
                        retryable: a["retryable"].as_bool().unwrap_or(true),
                    })
                }
                "sleepUntilCancelled" => {
                    tokio::select! {
                        _ = ctx.cancelled().cancelled() => {}
                        _ = tokio::time::sleep(TIMEOUT) => {
                            let w = self.where_();
                            self.run.with(|d| d.problems.push(format!("{w}: no cancellation seen")));
                        }
                    }
                    self.run.inc(|d| &mut d.cancel_seen, &self.task_type, 1);
                    continue;
                }
                "awaitSuspended" => {
                    let t = a["type"].as_str().unwrap().to_owned();
                    let n = a["count"].as_i64().unwrap_or(1);
                    if let Err(e) = self
                        .run
                        .until(&format!("{n} suspended run(s) of {t}"), |d| {
                            d.suspended.get(&t).copied().unwrap_or(0) >= n
                        })
                        .await
                    {
                        self.run.with(|d| d.problems.push(e));
                    }
                    continue;
                }
                "spawn" => {
                    let mut spec = a.clone();
                    spec["options"] = a.get("options").cloned().unwrap_or(json!({}));
                    match self.child(&spec) {
                        Ok(c) => match ctx.spawn_child(c).await {
                            Ok(h) => {
                                let v = self.view(&h);
                                bind = Some(vec![h]);
                                Ok(v)
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
                "spawnMany" => {
                    let kids: dynatask::Result<Vec<Child>> = a["children"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| self.child(c))
                        .collect();
                    match kids {
                        Ok(kids) => match ctx.spawn_many(kids).await {
                            Ok(hs) => {
                                let v = Value::Array(hs.iter().map(|h| self.view(h)).collect());
                                bind = Some(hs);
                                Ok(v)
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
                "waitAll" => {
                    let r = match self.handles_of(&a["handles"]) {
                        Some(hs) => ctx.wait_all::<Value, _, _>(&hs).await,
                        None => ctx.wait_children::<Value>().await,
                    };
                    match r {
                        Err(Error::ChildTaskFailed { failures }) if a.get("catch").is_some() => {
                            let views = failures.iter().map(outcome_view).collect();
                            self.vars.insert(
                                a["catch"].as_str().unwrap().to_owned(),
                                Value::Array(views),
                            );
                            continue;
                        }
                        other => other.map(Value::Array),
                    }
                }
                "waitAllSettled" => {
                    let r = match self.handles_of(&a["handles"]) {
                        Some(hs) => ctx.wait_all_settled(&hs).await,
                        None => ctx.wait_children_settled().await,
                    };
                    r.map(|os| Value::Array(os.iter().map(outcome_view).collect()))
                }
                "step" => {
                    let name = a["name"].as_str().unwrap();
                    let key = format!("{}/{name}", self.task_type);
                    let value = evaluate(&a["value"], &self.vars);
                    let run = self.run.clone();
                    ctx.step(name, || async move {
                        run.inc(|d| &mut d.steps, &key, 1);
                        value
                    })
                    .await
                }
                "progress" => ctx
                    .progress(&evaluate(&a["value"], &self.vars))
                    .await
                    .map(|()| Value::Null),
                other => panic!("unknown action {other}"),
            };
            match result {
                Err(Error::Suspended) => {
                    self.run.inc(|d| &mut d.suspended, &self.task_type, 1);
                    return Err(Error::Suspended);
                }
                Err(Error::StaleAttempt { .. }) if expect_stale => {
                    self.run.inc(|d| &mut d.stale_refused, &self.task_type, 1);
                }
                Err(e) => {
                    if expect_stale {
                        let w = self.where_();
                        self.run.with(|d| {
                            d.problems
                                .push(format!("{w}: {} failed but not as stale: {e}", a["do"]))
                        });
                    }
                    return Err(e);
                }
                Ok(value) => {
                    if expect_stale {
                        let w = self.where_();
                        self.run.with(|d| {
                            d.problems.push(format!(
                                "{w}: {} was expected to be refused as stale, and succeeded",
                                a["do"]
                            ))
                        });
                        continue;
                    }
                    if let Some(name) = a["as"].as_str() {
                        self.vars.insert(name.to_owned(), value);
                        if let Some(hs) = bind {
                            self.handles.insert(name.to_owned(), hs);
                        }
                    }
                }
            }
        }
        Ok(Value::Null)
    }
}

fn pick(error: &Value, want: &Value) -> Value {
    if error.is_null() {
        return Value::Null;
    }
    let mut out = Map::new();
    for k in want.as_object().unwrap().keys() {
        out.insert(k.clone(), error.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

async fn get(t: &Transport, path: &str) -> Value {
    t.call::<Value, ()>(Method::GET, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

struct Ctx {
    run: Arc<Run>,
    observer: Transport,
    withheld: Arc<Mutex<HashSet<String>>>,
    interventions: Vec<Value>,
    job: Mutex<String>,
}

async fn path_of(c: &Ctx, task_id: &str) -> String {
    let mut id = task_id.to_owned();
    let mut suffix: Vec<String> = Vec::new();
    loop {
        let known = c.run.data.lock().unwrap().paths.get(&id).cloned();
        if let Some(p) = known {
            let mut path = p;
            for s in suffix.iter().rev() {
                path = format!("{path}/{s}");
            }
            c.run
                .with(|d| d.paths.insert(task_id.to_owned(), path.clone()));
            return path;
        }
        // A child may start before its parent's spawn has answered.
        let t = get(&c.observer, &format!("/v1/tasks/{id}")).await;
        suffix.push(t["key"].as_str().unwrap_or("").to_owned());
        id = t["parentId"].as_str().expect("a parent").to_owned();
    }
}

async fn intervene(c: Arc<Ctx>, index: usize, task_id: String, attempt: u32) {
    let i = c.interventions[index].clone();
    let result: Result<(), String> = async {
        if path_of(&c, &task_id).await != i["when"]["started"].as_str().unwrap() {
            return Ok(());
        }
        if !c.run.with(|d| d.fired.insert(index)) {
            return Ok(());
        }
        let reason = json!({"reason": i["reason"]});
        let reason = if i["reason"].is_null() {
            json!({})
        } else {
            reason
        };
        match i["do"].as_str().unwrap() {
            "cancelTask" => {
                let target = match i["task"].as_str() {
                    None => task_id.clone(),
                    Some(p) => c
                        .run
                        .data
                        .lock()
                        .unwrap()
                        .paths
                        .iter()
                        .find(|(_, v)| v.as_str() == p)
                        .map(|(k, _)| k.clone())
                        .ok_or(format!("cancelTask: no task {p} known"))?,
                };
                c.observer
                    .call::<Value, _>(
                        Method::POST,
                        &format!("/v1/tasks/{target}/cancel"),
                        Some(&reason),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            "cancelJob" => {
                let job = c.job.lock().unwrap().clone();
                c.observer
                    .call::<Value, _>(
                        Method::POST,
                        &format!("/v1/jobs/{job}/cancel"),
                        Some(&reason),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            _ => {
                // expireLease: until the server has failed this attempt (its lease expired).
                c.withheld.lock().unwrap().insert(task_id.clone());
                let deadline = Instant::now() + TIMEOUT;
                while Instant::now() < deadline {
                    let t = get(&c.observer, &format!("/v1/tasks/{task_id}")).await;
                    let failed = t["attempts"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|r| r["attempt"] == json!(attempt)));
                    if t["attempt"].as_u64().unwrap_or(0) > u64::from(attempt) || failed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                c.withheld.lock().unwrap().remove(&task_id);
            }
        }
        Ok(())
    }
    .await;
    c.run.with(|d| {
        if let Err(e) = result {
            d.problems
                .push(format!("intervention {} failed: {e}", i["do"]));
        }
        d.pending -= 1;
    });
}

fn on_start(c: &Arc<Ctx>, task_id: &str, attempt: u32) {
    for (index, i) in c.interventions.iter().enumerate() {
        if i["do"] == "loseAnswers" || c.run.data.lock().unwrap().fired.contains(&index) {
            continue;
        }
        if let Some(a) = i["when"].get("attempt") {
            if a != &json!(attempt) {
                continue;
            }
        }
        c.run.with(|d| d.pending += 1);
        tokio::spawn(intervene(c.clone(), index, task_id.to_owned(), attempt));
    }
}

/// Runs one scenario against the server at `url`; (actual, expected, problems).
async fn run_scenario(s: &Value, url: &str) -> (Value, Value, Vec<String>) {
    let name = s["name"].as_str().unwrap();
    let namespace = format!("spec-{name}-{}", &common::unique("ns"));
    let run = Arc::new(Run {
        data: Mutex::new(Data::default()),
        changed: watch::channel(0).0,
    });
    let interventions: Vec<Value> = s["interventions"].as_array().cloned().unwrap_or_default();
    let lose: HashSet<String> = interventions
        .iter()
        .filter(|i| i["do"] == "loseAnswers")
        .flat_map(|i| i["paths"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    let proxy = Proxy::start(url, lose).await;
    let observer = Transport::new(url, None).unwrap();
    let c = Arc::new(Ctx {
        run: run.clone(),
        observer: observer.clone(),
        withheld: proxy.withheld.clone(),
        interventions,
        job: Mutex::new(String::new()),
    });

    // The raw event stream, open before the submission.
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let events_run = run.clone();
    let events_url = format!("{url}/v1/events");
    let events = tokio::spawn(async move {
        let res = reqwest::Client::new()
            .get(events_url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("the event stream");
        let _ = opened_tx.send(());
        let mut body = res.bytes_stream();
        let mut pending = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = pending.find("\n\n") {
                let block: String = pending.drain(..i + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|l| l.strip_prefix(' ').unwrap_or(l))
                    .collect();
                if !data.is_empty() {
                    if let Ok(e) = serde_json::from_str::<Value>(&data.join("\n")) {
                        events_run.with(|d| d.events.push(e));
                    }
                }
            }
        }
    });
    opened_rx.await.expect("the event stream opened");

    let settings = &s["worker"];
    let mut builder = Worker::builder(proxy.url.clone())
        .handle_signals(false)
        .namespace(namespace.clone())
        .concurrency(settings["concurrency"].as_u64().unwrap_or(16) as usize)
        .lease(Duration::from_millis(
            settings["leaseMs"].as_u64().unwrap_or(10_000),
        ))
        .grace(Duration::from_secs(5));
    for (t, actions) in s["handlers"].as_object().unwrap() {
        let mut spec = TaskType::new(t.clone());
        let ts = &s["types"][t];
        if let Some(n) = ts["concurrency"].as_u64() {
            spec = spec.concurrency(n as u32);
        }
        if let Some(n) = ts["maxAttempts"].as_u64() {
            spec = spec.max_attempts(n as u32);
        }
        if !ts["backoffMs"].is_null() {
            spec = spec.backoff(ms(&ts["backoffMs"]));
        }
        if !ts["maxBackoffMs"].is_null() {
            spec = spec.max_backoff(ms(&ts["maxBackoffMs"]));
        }
        if !ts["timeoutMs"].is_null() {
            spec = spec.timeout(ms(&ts["timeoutMs"]));
        }
        let actions: Arc<Vec<Value>> = Arc::new(actions.as_array().unwrap().clone());
        let (t, c) = (t.clone(), c.clone());
        builder = builder.handle(spec, move |ctx: TaskContext, payload: Value| {
            let (t, c, actions) = (t.clone(), c.clone(), actions.clone());
            async move {
                let run = c.run.clone();
                run.inc(|d| &mut d.runs, &t, 1);
                run.with(|d| {
                    d.starts.push(ctx.task_id().to_owned());
                    d.active += 1;
                    let now = {
                        let r = d.running.entry(t.clone()).or_default();
                        *r += 1;
                        *r
                    };
                    let m = d.max_running.entry(t.clone()).or_default();
                    *m = (*m).max(now);
                });
                on_start(&c, ctx.task_id(), ctx.attempt());
                let mut vars = HashMap::new();
                vars.insert("payload".to_owned(), payload);
                vars.insert("attempt".to_owned(), json!(ctx.attempt()));
                let p = Performer {
                    task_type: t.clone(),
                    ctx,
                    run: run.clone(),
                    vars,
                    handles: HashMap::new(),
                };
                let out = p.perform(&actions).await;
                run.with(|d| {
                    d.active -= 1;
                    *d.running.entry(t.clone()).or_default() -= 1;
                });
                out
            }
        });
    }
    let worker = builder.build().unwrap();
    let stop = worker.shutdown_token();

    let submit = &s["submit"];
    let mut options = submit["options"].as_object().cloned().unwrap_or_default();
    options.insert("namespace".to_owned(), json!(namespace));
    // Idempotent by job id: a repeated submission (a lost answer) returns the same job.
    options.insert("jobId".to_owned(), json!(dynatask::new_job_id()));
    let submitter = Transport::new(&proxy.url, None).unwrap();
    let body = json!({"jobs": [{"type": submit["type"], "payload": submit["payload"], "options": options}]});
    let r: Value = submitter
        .call(Method::POST, "/v1/jobs", Some(&body))
        .await
        .expect("submitted");
    let job_id = r["jobs"][0]["jobId"].as_str().unwrap().to_owned();
    let root_id = r["jobs"][0]["rootTaskId"].as_str().unwrap().to_owned();
    *c.job.lock().unwrap() = job_id.clone();
    run.with(|d| d.paths.insert(root_id, "root".to_owned()));
    let serving = tokio::spawn(worker.run());

    let deadline = Instant::now() + TIMEOUT;
    let mut info = get(&observer, &format!("/v1/jobs/{job_id}")).await;
    while info["state"] == "running" {
        assert!(
            Instant::now() < deadline,
            "{name}: job still running after {TIMEOUT:?}: {}",
            info["counts"]
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        info = get(&observer, &format!("/v1/jobs/{job_id}")).await;
    }
    let quiet = run
        .until(
            "the handlers to return, the interventions to end and the job event",
            |d| {
                d.active == 0
                    && d.pending == 0
                    && d.events
                        .iter()
                        .any(|e| e["kind"] == "job" && e["jobId"] == json!(job_id))
            },
        )
        .await;
    if let Err(e) = quiet {
        run.with(|d| d.problems.push(e));
    }
    stop.cancel();
    let _ = tokio::time::timeout(TIMEOUT, serving).await;
    events.abort();

    // The tree, by path.
    let tree = get(&observer, &format!("/v1/jobs/{job_id}/tasks?limit=10000")).await;
    let tasks = tree["tasks"].as_array().unwrap().clone();
    let mut path_by_id: HashMap<String, String> = HashMap::new();
    for t in &tasks {
        let id = t["id"].as_str().unwrap().to_owned();
        let path = match t["parentId"].as_str() {
            None => "root".to_owned(),
            Some(p) => format!("{}/{}", path_by_id[p], t["key"].as_str().unwrap()),
        };
        path_by_id.insert(id, path);
    }
    let x = &s["expect"];
    let mut expected = x.as_object().unwrap().clone();
    let mut actual = Map::new();
    let mut job = json!({"state": info["state"]});
    if x["job"].get("result").is_some() {
        job["result"] = info["result"].clone();
    }
    if let Some(want) = x["job"].get("error") {
        job["error"] = pick(&info["error"], want);
    }
    actual.insert("job".to_owned(), job);
    let mut actual_tasks = Map::new();
    for t in &tasks {
        let id = t["id"].as_str().unwrap();
        let path = path_by_id[id].clone();
        let Some(want) = x["tasks"].get(&path) else {
            actual_tasks.insert(
                path,
                json!({"type": t["type"], "state": t["state"], "attempt": t["attempt"]}),
            );
            continue;
        };
        let mut got = Map::new();
        for k in ["type", "state", "attempt", "result", "progress"] {
            if want.get(k).is_some() {
                got.insert(k.to_owned(), t[k].clone());
            }
        }
        if let Some(w) = want.get("error") {
            got.insert("error".to_owned(), pick(&t["error"], w));
        }
        let full = if want.get("startDelayAtLeastMs").is_some()
            || want.get("failedAttempts").is_some()
            || want.get("retryGapsAtLeastMs").is_some()
        {
            get(&observer, &format!("/v1/tasks/{id}")).await
        } else {
            Value::Null
        };
        let mut records: Vec<Value> = full["attempts"].as_array().cloned().unwrap_or_default();
        records.sort_by_key(|r| r["attempt"].as_i64());
        if let Some(bound) = want.get("startDelayAtLeastMs").and_then(Value::as_i64) {
            let started = records
                .first()
                .map(|r| r["startedAt"].clone())
                .unwrap_or_else(|| full["startedAt"].clone());
            let delay = started
                .as_i64()
                .map_or(-1, |s| s - full["createdAt"].as_i64().unwrap());
            got.insert(
                "startDelayAtLeastMs".to_owned(),
                json!(if delay >= bound { bound } else { delay }),
            );
        }
        if want.get("failedAttempts").is_some() {
            got.insert(
                "failedAttempts".to_owned(),
                records.iter().map(|r| r["error"]["name"].clone()).collect(),
            );
        }
        if let Some(bounds) = want.get("retryGapsAtLeastMs").and_then(Value::as_array) {
            let mut starts: Vec<i64> = records
                .iter()
                .map(|r| r["startedAt"].as_i64().unwrap_or(0))
                .collect();
            let last = records.last().map_or(0, |r| r["attempt"].as_i64().unwrap());
            if full["attempt"].as_i64().unwrap() > last {
                if let Some(s) = full["startedAt"].as_i64() {
                    starts.push(s);
                }
            }
            let mut gaps = Vec::new();
            for (i, r) in records
                .iter()
                .enumerate()
                .take(starts.len().saturating_sub(1))
            {
                let gap = starts[i + 1] - r["finishedAt"].as_i64().unwrap_or(0);
                let bound = bounds.get(i).and_then(Value::as_i64);
                gaps.push(match bound {
                    Some(b) if gap >= b => b,
                    _ => gap,
                });
            }
            got.insert("retryGapsAtLeastMs".to_owned(), json!(gaps));
        }
        actual_tasks.insert(path, Value::Object(got));
    }
    actual.insert("tasks".to_owned(), Value::Object(actual_tasks));
    if x.get("jobsInNamespace").is_some() {
        let jobs = get(&observer, &format!("/v1/jobs?namespace={namespace}")).await;
        actual.insert(
            "jobsInNamespace".to_owned(),
            json!(jobs["jobs"].as_array().map_or(0, Vec::len)),
        );
    }
    let d = run.data.lock().unwrap();
    for (key, mine) in [
        ("runs", &d.runs),
        ("steps", &d.steps),
        ("cancelSeen", &d.cancel_seen),
        ("staleRefused", &d.stale_refused),
    ] {
        if let Some(want) = x.get(key).and_then(Value::as_object) {
            let got: Map<String, Value> = want
                .keys()
                .map(|k| (k.clone(), json!(mine.get(k).copied().unwrap_or(0))))
                .collect();
            actual.insert(key.to_owned(), Value::Object(got));
        }
    }
    if let Some(want) = x.get("maxRunning").and_then(Value::as_object) {
        // Within the bound shows as the bound, above it as it was.
        let got: Map<String, Value> = want
            .iter()
            .map(|(k, most)| {
                let seen = d.max_running.get(k).copied().unwrap_or(0);
                let most = most.as_i64().unwrap();
                (k.clone(), json!(if seen <= most { most } else { seen }))
            })
            .collect();
        actual.insert("maxRunning".to_owned(), Value::Object(got));
    }
    if let Some(listed) = x.get("startOrder").and_then(Value::as_array) {
        let listed: HashSet<&str> = listed.iter().map(|v| v.as_str().unwrap()).collect();
        let mut order: Vec<String> = Vec::new();
        for id in &d.starts {
            if let Some(p) = path_by_id.get(id) {
                if listed.contains(p.as_str()) && !order.contains(p) {
                    order.push(p.clone());
                }
            }
        }
        actual.insert("startOrder".to_owned(), json!(order));
    }
    if let Some(want) = x.get("progressEvents").and_then(Value::as_object) {
        let mut seen: BTreeMap<String, Vec<Value>> =
            want.keys().map(|k| (k.clone(), Vec::new())).collect();
        for e in &d.events {
            if e["kind"] != "progress" || e["jobId"] != json!(job_id) {
                continue;
            }
            let p = e["taskId"]
                .as_str()
                .and_then(|t| path_by_id.get(t))
                .cloned()
                .unwrap_or_default();
            if let Some(list) = seen.get_mut(&p) {
                list.push(e["progress"].clone());
            }
        }
        actual.insert("progressEvents".to_owned(), json!(seen));
    }
    if let Some(want) = x.get("answersLost").and_then(Value::as_array) {
        let mut cut: Vec<String> = proxy.cut.lock().unwrap().iter().cloned().collect();
        cut.sort();
        let mut want: Vec<String> = want
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        want.sort();
        actual.insert("answersLost".to_owned(), json!(cut));
        expected.insert("answersLost".to_owned(), json!(want));
    }
    let problems = d.problems.clone();
    (Value::Object(actual), Value::Object(expected), problems)
}

async fn run_all(store: Store) {
    let server = TestServer::start_with(store, &["--grace-ms", "2000", "--lease-ms", "1000"]);
    let only = std::env::var("DYNATASK_SPEC").ok();
    let mut failures = Vec::new();
    for s in scenarios() {
        let name = s["name"].as_str().unwrap().to_owned();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let started = Instant::now();
        let (actual, expected, problems) = run_scenario(&s, &server.url).await;
        let ok = problems.is_empty() && actual == expected;
        eprintln!(
            "{} {name} on {} ({} ms)",
            if ok { "ok" } else { "FAILED" },
            store.name(),
            started.elapsed().as_millis()
        );
        if !ok {
            failures.push(format!(
                "{name} on {}:\n  problems: {problems:?}\n  actual:   {actual}\n  expected: {expected}",
                store.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_runner_reads_every_scenario() {
    let names: HashSet<String> = scenarios()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    for n in [
        "spawn-and-resume",
        "wait-shapes",
        "retries-backoff",
        "stale-after-lease-expiry",
        "cancel-running-task",
        "dedup-keys",
        "dependencies",
        "steps-across-attempts",
        "progress-events",
        "lost-answers",
    ] {
        assert!(names.contains(n), "spec/scenarios/{n}.json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_on_sqlite() {
    run_all(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_on_postgres() {
    if Store::all().contains(&Store::Postgres) {
        run_all(Store::Postgres).await;
    }
}
