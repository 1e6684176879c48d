//! Submits a `greet` job and waits for its result (served by any worker, in any language).
//!
//! ```bash
//! DYNATASK_URL=http://127.0.0.1:7077 cargo run --example submit -- Ada
//! ```

use dynatask::{Client, SubmitOptions};
use serde::Serialize;

#[derive(Serialize)]
struct Greet {
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), dynatask::Error> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "Ada".to_owned());
    // "" takes $DYNATASK_URL, else http://127.0.0.1:7077; None takes $DYNATASK_TOKEN.
    let client = Client::new("", None)?;
    let job = client
        .submit("greet", &Greet { name }, SubmitOptions::default())
        .await?;
    println!("submitted job {} (created: {})", job.job_id, job.created);
    let greeting: String = client.wait_for_result(&job.job_id, None).await?;
    println!("{greeting}");
    let info = client.get_job(&job.job_id).await?;
    println!(
        "{:?}: {} of {} tasks succeeded",
        info.state, info.counts.succeeded, info.total
    );
    Ok(())
}
