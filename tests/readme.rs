//! The README's quickstart, run as written against a real `sluice serve`, so the README and
//! the product cannot drift apart.
//!
//! The commands are taken from the first `sh` block of README.md's Quickstart section
//! (continuation lines joined, comments skipped) and run one after the other with `sh` in
//! one temporary working directory, as a reader pasting them would. Three substitutions,
//! and only these: the server is this test's own (random port, temporary data directory),
//! so `localhost:7171` becomes its address; `cargo build` is skipped (the generator is
//! already linked into this test); and a `sluice-loadgen corpus ... > FILE` line is parsed
//! by the loadgen's own command-line parser and written by the same generator the CLI
//! uses, in-process.
//!
//! Every command must exit 0; every search must answer JSON with at least one hit; an
//! expected answer the README shows in a comment (`# {...}` on the command line or on the
//! line after it, `...` ending the part that is shown) must begin the actual answer.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use clap::Parser as _;
use serde_json::Value;
use sluice_loadgen::cli::{Cli, Command as LoadgenCommand};
use support::Server;

const README: &str = include_str!("../README.md");

/// The address the README's commands talk to.
const README_ADDRESS: &str = "localhost:7171";

/// One command of the quickstart, with the answer the README shows for it, if any.
#[derive(Debug)]
struct QuickstartCommand {
    text: String,
    shown_answer: Option<String>,
}

/// The commands of the Quickstart section's first `sh` block.
fn quickstart_commands(readme: &str) -> Vec<QuickstartCommand> {
    let section = readme
        .split_once("\n## Quickstart\n")
        .expect("README.md has a Quickstart section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the Quickstart has an sh block")
        .1
        .split_once("\n```")
        .expect("the sh block ends")
        .0;
    let mut commands: Vec<QuickstartCommand> = Vec::new();
    let mut pending = String::new();
    let mut previous_was_command = false;
    for line in block.lines() {
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            if previous_was_command && comment.starts_with('{') {
                if let Some(last) = commands.last_mut() {
                    last.shown_answer = Some(comment.to_owned());
                }
            }
            previous_was_command = false;
            continue;
        }
        if trimmed.is_empty() {
            previous_was_command = false;
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (text, shown_answer) = match full.split_once(" # ") {
            Some((command, comment)) if comment.trim().starts_with('{') => {
                (command.trim().to_owned(), Some(comment.trim().to_owned()))
            }
            _ => (full.trim().to_owned(), None),
        };
        commands.push(QuickstartCommand { text, shown_answer });
        previous_was_command = true;
    }
    assert!(pending.is_empty(), "the block ends inside a command");
    commands
}

/// Runs `sluice-loadgen corpus ARGS > FILE` in-process; false if `command` is not one.
fn run_corpus_command(command: &str, workdir: &Path) -> bool {
    let Some(at) = command.find("sluice-loadgen corpus") else {
        return false;
    };
    let (invocation, file) = command[at..]
        .split_once(" > ")
        .unwrap_or_else(|| panic!("{command:?}: the corpus goes to a file"));
    assert!(
        !invocation.contains(['\'', '"', '|']) && !file.contains(' '),
        "{command:?}: only plain words are substituted"
    );
    let cli = Cli::try_parse_from(invocation.split_whitespace())
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let LoadgenCommand::Corpus {
        docs,
        seed,
        body_words,
        schema,
    } = cli.command
    else {
        panic!("{command:?} is not the corpus verb");
    };
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(workdir.join(file.trim())).expect("create the corpus file"),
    );
    if schema {
        writeln!(out, "{}", sluice_loadgen::corpus::STANDARD_SCHEMA_DOCUMENT).expect("write");
    } else {
        sluice_loadgen::corpus::write_ndjson(&mut out, docs, seed, body_words).expect("write");
    }
    out.flush().expect("flush the corpus file");
    true
}

/// Whether a program is on `PATH` (asked through `sh`, which runs the commands).
fn on_path(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn quickstart_commands_are_found() {
    let commands = quickstart_commands(README);
    let searches = commands
        .iter()
        .filter(|c| c.text.contains("/search"))
        .count();
    assert!(
        searches >= 3,
        "the quickstart shows searches: {commands:#?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.text.contains("sluice-loadgen corpus --schema")),
        "the quickstart makes the schema with the repository's generator"
    );
    assert!(
        commands.iter().all(|c| !c.text.contains("shared/")),
        "the quickstart needs nothing outside the repository"
    );
    let joined = commands
        .iter()
        .find(|c| c.text.contains("title:(") && c.text.contains("sort=price:asc"))
        .expect("the filtered search");
    assert!(
        joined.text.contains("filter=tags:tag03"),
        "continuation lines are joined: {joined:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_and_every_search_finds_documents() {
    for program in ["curl", "gzip"] {
        if !on_path(program) {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED quickstart_runs_and_every_search_finds_documents: {program}, which the quickstart uses, is not on PATH"
            );
            return;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let workdir = dir.path().join("work");
    std::fs::create_dir(&workdir).expect("work dir");
    let server = Server::start(&dir.path().join("data"), None).await;
    let address = server
        .base
        .strip_prefix("http://")
        .expect("an http address");

    let mut searches = 0;
    for command in quickstart_commands(README) {
        if command.text.starts_with("cargo build") {
            continue;
        }
        if run_corpus_command(&command.text, &workdir) {
            continue;
        }
        assert!(
            command.text.contains(README_ADDRESS),
            "{:?} does not talk to {README_ADDRESS}",
            command.text
        );
        let text = command.text.replace(README_ADDRESS, address);
        // Blocking is fine here: the server is another process.
        let output = Command::new("sh")
            .arg("-c")
            .arg(&text)
            .current_dir(&workdir)
            .output()
            .expect("run sh");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{:?} exited with {}: {answer} {}",
            command.text,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(shown) = &command.shown_answer {
            let shown_part = shown.split("...").next().unwrap_or(shown);
            assert!(
                answer.starts_with(shown_part),
                "{:?} answered {answer:?}; the README shows {shown:?}",
                command.text
            );
        }
        if command.text.contains("/search") {
            searches += 1;
            let body: Value = serde_json::from_str(&answer)
                .unwrap_or_else(|e| panic!("{:?} answered {answer:?}: {e}", command.text));
            let hits = body["hits"].as_array().map_or(0, Vec::len);
            assert!(
                body["total"].as_u64().unwrap_or(0) > 0 && hits > 0,
                "{:?} found nothing: {body}",
                command.text
            );
        }
    }
    assert!(searches >= 3, "the quickstart's searches ran");
}
