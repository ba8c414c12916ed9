//! A driver for counting instructions of the delivery path, where timings are too noisy
//! to see a change of a few percent: `callgrind` counts are the same run after run.
//!
//! ```text
//! cargo build --release -p benches --example deliver_profile
//! valgrind --tool=callgrind target/release/examples/deliver_profile ours 1000
//! valgrind --tool=callgrind target/release/examples/deliver_profile ours 2000
//! ```
//!
//! The difference of two counts over the difference of `N` is the cost of one operation
//! with start-up taken out. Modes: `ours` (one webhook through `Deliverer::deliver`),
//! `bare` (a bare reqwest POST of the same body), `render` (the render alone).

use triggers::receiver::Receiver;
use triggers::{Deliverer, RetryBackoff, Variables};

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ours".into());
    let count: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    // One thread, as in the criterion bench.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver = runtime.block_on(Receiver::start())?;
    receiver.forget_requests();
    let url = receiver.url("/hook");
    let triggers = benches::triggers(&url, 1);
    let variables = Variables::from_stats(
        &benches::materialization(10),
        &benches::stats(10),
        "run".into(),
    )?
    .ok_or_else(|| anyhow::anyhow!("stats have documents"))?;
    let deliverer = Deliverer::new(RetryBackoff::default())?;
    let id = triggers::webhook_id(&variables.flow_run_id, 0);
    let body = triggers.render(0, &variables, &id)?;
    let bare = reqwest::Client::builder().no_proxy().build()?;
    runtime.block_on(async {
        for _ in 0..count {
            match mode.as_str() {
                "ours" => {
                    deliverer.deliver(&triggers, &variables).await?;
                }
                "bare" => {
                    let response = bare
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    response.bytes().await?;
                }
                "render" => {
                    std::hint::black_box(triggers.render(0, &variables, &id)?);
                }
                other => anyhow::bail!("unknown mode {other:?}: ours, bare or render"),
            }
        }
        Ok(())
    })
}
