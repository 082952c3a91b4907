//! Histogram samples do not pile up on a server nobody scrapes (`metrics::keep_drained`).
//!
//! A test binary of its own: its global allocator counts live bytes, which only means something while
//! no other test of the same process allocates.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Samples per upkeep period; at 8 bytes each, far more than the recorder's own bookkeeping.
const SAMPLES_PER_PERIOD: usize = 100_000;
const PERIODS: usize = 10;

/// Bytes still allocated since `region` began.
fn live_bytes(region: &Region<'_, System>) -> i64 {
    let change = region.change();
    change.bytes_allocated as i64 - change.bytes_deallocated as i64
}

/// Records a period's samples, then lets the paused clock reach the next upkeep.
async fn one_period(histogram: &metrics::Histogram) {
    for n in 0..SAMPLES_PER_PERIOD {
        histogram.record(n as f64);
    }
    tokio::time::advance(cortex_api::metrics::UPKEEP_EVERY).await;
    // The upkeep task runs when this one yields (single-threaded runtime, paused clock).
    tokio::task::yield_now().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unscraped_histogram_samples_are_folded_instead_of_kept() {
    let handle = cortex_api::metrics::handle();
    let histogram = metrics::histogram!("cortex_test_upkeep_seconds");
    let samples = (SAMPLES_PER_PERIOD * PERIODS) as i64;

    // With the upkeep running, samples are folded period by period.
    let shutdown = CancellationToken::new();
    let upkeep = tokio::spawn(cortex_api::metrics::keep_drained(handle.clone(), shutdown.clone()));
    tokio::task::yield_now().await;
    let region = Region::new(GLOBAL);
    for _ in 0..PERIODS {
        one_period(&histogram).await;
    }
    let kept_with_upkeep = live_bytes(&region);
    shutdown.cancel();
    upkeep.await.unwrap();

    // Without it (afterwards, so the first half's freed blocks cannot hide this half's), every sample
    // stays until something folds it.
    let region = Region::new(GLOBAL);
    for _ in 0..PERIODS {
        one_period(&histogram).await;
    }
    let kept_without_upkeep = live_bytes(&region);
    handle.run_upkeep();

    println!("{samples} samples: {kept_with_upkeep} bytes kept with the upkeep, {kept_without_upkeep} without");
    assert!(
        kept_without_upkeep >= samples * 8,
        "without upkeep the samples are expected to stay ({kept_without_upkeep} bytes for {samples} samples)"
    );
    assert!(
        kept_with_upkeep < kept_without_upkeep / 4,
        "with upkeep {kept_with_upkeep} bytes stayed, without {kept_without_upkeep}"
    );
    // The series is still there and counts every sample.
    let text = handle.render();
    assert!(text.contains(&format!("cortex_test_upkeep_seconds_count {}", 2 * samples)), "{text}");
}
