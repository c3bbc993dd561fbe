//! 1, 2 and 3 nodes in this process sharing one mosquitto subscription
//! (`[mqtt] shared_group`): warm instances, QoS 1, each count's nodes
//! started afresh; rounds alternate the counts' order so the machine's
//! drift falls on each alike. The nodes share this process and its cores,
//! so the figures say what the shared subscription costs and how mosquitto
//! spreads the load, not how a fleet of machines scales.

use super::mosquitto::Mosquitto;
use super::{QoS, Transport, burst, median, start_node};

pub async fn run(n: usize) {
    let rounds: usize = std::env::var("BRINK_BENCH_AB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "fleet: 1, 2 and 3 nodes on one mosquitto, shared subscription, warm, QoS 1, {n} events, {rounds} rounds"
    );
    let counts = [1usize, 2, 3];
    let mut rates = vec![Vec::new(); counts.len()];
    for round in 0..rounds {
        for k in 0..counts.len() {
            let side = (round + k) % counts.len();
            // A fresh broker each time: the last configuration's nodes
            // leave persistent sessions in the group, which mosquitto goes
            // on giving their share (queued for their return).
            let Some(broker) = Mosquitto::start("max_queued_messages 0\nmax_inflight_messages 0\n")
            else {
                println!("mosquitto is not installed: the fleet bench is skipped");
                return;
            };
            let mut nodes = Vec::new();
            for _ in 0..counts[side] {
                nodes.push(
                    start_node(1000, Transport::Shared(broker.port), true, "")
                        .await
                        .0,
                );
            }
            burst(
                broker.port,
                2_000,
                QoS::AtLeastOnce,
                "warmup",
                "sensors",
                "out/#",
            )
            .await;
            let rate = burst(
                broker.port,
                n,
                QoS::AtLeastOnce,
                "fleet",
                "sensors",
                "out/#",
            )
            .await;
            for node in nodes {
                node.shutdown().await.unwrap();
            }
            println!(
                "  round {round}, {} node(s): {rate:.0} events/s",
                counts[side]
            );
            rates[side].push(rate);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    for (count, m) in counts.iter().zip(&medians) {
        println!(
            "{count} node(s): {m:.0} events/s (median), {:.2}x one node",
            m / medians[0]
        );
    }
}
