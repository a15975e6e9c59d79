//! "Did you mean": the closest names to a misspelt one.

/// Up to three names close to `word`, closest first.
pub fn closest_few<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = names
        .into_iter()
        .map(|n| (strsim::jaro_winkler(word, n), n))
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

pub fn closest<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    closest_few(word, names).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name() {
        let names = ["bigmachine", "another-machine", "web1", "web2"];
        assert_eq!(closest("bigmachin", names), Some("bigmachine"));
        assert_eq!(closest_few("web3", names), vec!["web1", "web2"]);
        assert_eq!(closest("zzz", names), None);
    }
}
