//! Ranking rules of retrieval (SPEC §9.6), pure functions so they are tested exhaustively:
//! `score = 0.5 × similarity + 0.3 × recency + 0.2 × utility`, with
//! `recency = 0.5^(age_days / half_life)` per record type and `utility = min(log10(access_count + 1) / 3, 1)`.
//! Candidates from the keyword and the vector lists are merged by reciprocal rank fusion first.

use std::collections::HashMap;
use std::hash::Hash;

use cortex_core::memory::MemoryType;

/// Weight of cosine similarity inside `similarity` when vectors exist (the rest is the keyword score).
pub const COSINE_WEIGHT: f64 = 0.7;
/// The RRF constant of Cormack et al.; damps the head of each list.
pub const RRF_K: f64 = 60.0;

/// How fresh a record is: 1 when new, 0.5 after one half-life; standing rules never fade.
pub fn recency(memory_type: MemoryType, age_days: f64) -> f64 {
    match memory_type.half_life_days() {
        None => 1.0,
        Some(half_life) => 0.5_f64.powf(age_days.max(0.0) / half_life),
    }
}

/// How often a record proved useful: 0 never recalled, 1 after 999 recalls.
pub fn utility(access_count: i64) -> f64 {
    ((access_count.max(0) as f64 + 1.0).log10() / 3.0).min(1.0)
}

/// Similarity from cosine (−1…1, clamped to 0…1) and a keyword score (0…1); keyword only without vectors.
pub fn similarity(cosine: Option<f64>, keyword: f64) -> f64 {
    match cosine {
        Some(cosine) => COSINE_WEIGHT * cosine.clamp(0.0, 1.0) + (1.0 - COSINE_WEIGHT) * keyword,
        None => keyword,
    }
}

/// The final score.
pub fn score(similarity: f64, recency: f64, utility: f64) -> f64 {
    0.5 * similarity + 0.3 * recency + 0.2 * utility
}

/// Reciprocal rank fusion of ranked lists (best first): `Σ 1 / (RRF_K + rank)`, rank starting at 1. The
/// result is ordered best first; ties keep the order of first appearance.
pub fn reciprocal_rank_fusion<T: Copy + Eq + Hash>(lists: &[&[T]]) -> Vec<(T, f64)> {
    let mut order: Vec<T> = Vec::new();
    let mut sums: HashMap<T, f64> = HashMap::new();
    for list in lists {
        for (rank, item) in list.iter().enumerate() {
            let entry = sums.entry(*item).or_insert_with(|| {
                order.push(*item);
                0.0
            });
            *entry += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(T, f64)> = order.into_iter().map(|item| (item, sums[&item])).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn recency_halves_per_half_life() {
        assert!(close(recency(MemoryType::Event, 0.0), 1.0));
        assert!(close(recency(MemoryType::Event, 14.0), 0.5));
        assert!(close(recency(MemoryType::Event, 28.0), 0.25));
        assert!(close(recency(MemoryType::Preference, 180.0), 0.5));
        assert!(close(recency(MemoryType::Fact, 365.0), 0.5));
        assert!(close(recency(MemoryType::SystemRule, 10_000.0), 1.0));
        assert!(close(recency(MemoryType::Fact, -3.0), 1.0), "clock skew never scores above new");
    }

    #[test]
    fn utility_is_log_scaled_and_capped() {
        assert!(close(utility(0), 0.0));
        assert!(close(utility(9), 1.0 / 3.0));
        assert!(close(utility(999), 1.0));
        assert!(close(utility(1_000_000), 1.0));
    }

    #[test]
    fn similarity_and_score_use_the_spec_weights() {
        assert!(close(similarity(Some(1.0), 0.0), 0.7));
        assert!(close(similarity(Some(-0.5), 1.0), 0.3));
        assert!(close(similarity(None, 0.6), 0.6));
        assert!(close(score(1.0, 1.0, 1.0), 1.0));
        assert!(close(score(1.0, 0.0, 0.0), 0.5));
        assert!(close(score(0.0, 1.0, 0.0), 0.3));
        assert!(close(score(0.0, 0.0, 1.0), 0.2));
    }

    #[test]
    fn rrf_rewards_agreement_between_lists() {
        let keyword = [1, 2, 3];
        let vector = [3, 4, 1];
        let fused = reciprocal_rank_fusion(&[&keyword, &vector]);
        let ids: Vec<i32> = fused.iter().map(|(id, _)| *id).collect();
        // 1 (ranks 1 and 3) and 3 (ranks 3 and 1) tie at the top; 1 appeared first.
        assert_eq!(ids, vec![1, 3, 2, 4]);
        assert!(close(fused[0].1, 1.0 / 61.0 + 1.0 / 63.0));
    }
}
