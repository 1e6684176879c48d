//! The Rust side of the three-languages test (tests/three_languages.rs): serves `rs_leaf`,
//! which doubles its payload's `n`. With a delay (ms, the third argument), each run holds its
//! slot that long first, so the test can kill the process mid-job. Prints `ready`.
//!
//! ```text
//! cargo run --example leaf_worker -- http://127.0.0.1:7077 default [delay-ms]
//! ```

use std::time::Duration;

use dynatask::{TaskContext, Worker};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Leaf {
    n: u64,
}

#[derive(Serialize)]
struct Doubled {
    n: u64,
    language: &'static str,
}

#[tokio::main]
async fn main() -> Result<(), dynatask::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_default();
    let namespace = args.next().unwrap_or_else(|| "default".to_owned());
    let delay = Duration::from_millis(args.next().and_then(|d| d.parse().ok()).unwrap_or(0));
    let worker = Worker::builder(url)
        .namespace(namespace)
        .concurrency(4)
        .handle("rs_leaf", move |_ctx: TaskContext, leaf: Leaf| async move {
            tokio::time::sleep(delay).await;
            Ok(Doubled {
                n: leaf.n * 2,
                language: "rust",
            })
        })
        .build()?;
    println!("ready");
    worker.run().await
}
