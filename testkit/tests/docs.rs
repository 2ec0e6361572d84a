//! The documentation's links: every relative link in the repository's
//! Markdown (README.md, docs/, BENCHMARKS.md, examples/) names a file that
//! exists, and a `#section` names a heading that page has, so a moved
//! section cannot leave a dead link. The README stays a front door.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// Every Markdown file of the repository's own (not built, fetched or installed).
fn markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || ["target", "node_modules", "gen"].contains(&name) {
            continue;
        }
        if path.is_dir() {
            markdown(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and `_`
/// kept, spaces made `-`, everything else dropped; a repeat gets `-1`, `-2`…
fn slug(text: &str, seen: &mut HashMap<String, usize>) -> String {
    let base: String = text
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect();
    let n = seen.entry(base.clone()).or_insert(0);
    let slug = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
    *n += 1;
    slug
}

/// A page's anchors and its links (as written).
fn read(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut anchors, mut links, mut seen) = (Vec::new(), Vec::new(), HashMap::new());
    let mut heading: Option<String> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => anchors.push(slug(&heading.take().unwrap_or_default(), &mut seen)),
            Event::Text(t) | Event::Code(t) => heading.iter_mut().for_each(|h| h.push_str(&t)),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => links.push(dest_url.to_string()),
            _ => {}
        }
    }
    (anchors, links)
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = repo();
    let mut pages = Vec::new();
    markdown(&root, &mut pages);
    assert!(pages.len() >= 10, "the docs were not found: {pages:?}");
    let parsed: HashMap<PathBuf, (Vec<String>, Vec<String>)> = pages
        .iter()
        .map(|p| (p.canonicalize().expect("exists"), read(&std::fs::read_to_string(p).expect("UTF-8 text"))))
        .collect();
    let mut dead = Vec::new();
    let mut checked = 0;
    for (page, (_, links)) in &parsed {
        for link in links {
            let external =
                link.split_once(':').is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphabetic()));
            if external {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').map_or((link.as_str(), None), |(p, a)| (p, Some(a)));
            let target = if path.is_empty() { page.clone() } else { page.parent().expect("a folder").join(path) };
            let shown = page.strip_prefix(&root).unwrap_or(page).display().to_string();
            let Ok(target) = target.canonicalize() else {
                dead.push(format!("{shown}: {link} (no such file)"));
                continue;
            };
            if let Some(anchor) = anchor {
                match parsed.get(&target) {
                    Some((anchors, _)) if anchors.iter().any(|a| a == anchor) => {}
                    Some(_) => dead.push(format!("{shown}: {link} (no such heading)")),
                    None => dead.push(format!("{shown}: {link} (an anchor into a file that is not Markdown)")),
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    assert!(checked >= 50, "only {checked} relative links found");
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let (anchors, _) = read(
        "# Faena\n## The `faena` CLI\n### Mining (`randomx.mine`)\n## High availability: several masters\n\
         ## Alerts, Prometheus and Grafana\n## Tests\n## Tests\n```\n# not a heading\n```\n",
    );
    let want = [
        "faena",
        "the-faena-cli",
        "mining-randomxmine",
        "high-availability-several-masters",
        "alerts-prometheus-and-grafana",
        "tests",
        "tests-1",
    ];
    assert_eq!(anchors, want);
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines: the manual goes in docs/, one page per topic");
    assert!(readme.contains("./scripts/dev.sh") && readme.contains("./scripts/test.sh"), "the two commands");
}
