//! The one table the harness prints: a Markdown table, so it can go into docs/benchmarks.md
//! as it is.

use std::fmt::Write as _;

use crate::measure::Pair;

/// One line of the table: what was measured, at what durability, rivulet's figure, the
/// peer's or probe's, their ratio and the project's target it is judged against.
pub struct Row {
    pub what: String,
    pub durability: &'static str,
    pub ours: String,
    pub theirs: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    /// Two figures measured alternately (`pair.a` rivulet's, `pair.b` the one named `other`),
    /// printed with `unit`; with `at_least`, the ratio of their medians is judged against it.
    pub fn compared(
        what: impl Into<String>,
        durability: &'static str,
        pair: &Pair,
        other: &str,
        unit: fn(f64) -> String,
        at_least: Option<f64>,
    ) -> Row {
        Row {
            what: what.into(),
            durability,
            ours: unit(pair.a.median()),
            theirs: format!("{other} {}", unit(pair.b.median())),
            ratio: format!("{:.2}x ({:.2}x)", pair.ratio(), pair.round_ratio()),
            target: at_least.map_or(String::new(), |t| format!(">= {t}x {other}")),
            verdict: at_least.map_or(Verdict::Info, |t| Verdict::from(pair.ratio() >= t)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Met,
    NotMet,
    /// A row given for information, with no target of its own.
    Info,
}

impl Verdict {
    pub fn from(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::NotMet }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::Info => "",
        }
    }
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        // Each row is printed as it is measured too, so a long run shows its progress.
        eprintln!(
            "  {} [{}]: rivulet {} | other {} | {} {}",
            row.what,
            row.durability,
            row.ours,
            row.theirs,
            row.ratio,
            row.verdict.word()
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("| what | durability | rivulet | compared with | ratio | target | verdict |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.what,
                r.durability,
                r.ours,
                r.theirs,
                r.ratio,
                r.target,
                r.verdict.word()
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n- {n}");
        }
        out
    }
}

/// Records/s in a short human form: 1.23 M/s, 456 K/s.
pub fn per_sec(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0} K/s", x / 1e3)
    } else {
        format!("{x:.0}/s")
    }
}

pub fn mb_per_sec(x: f64) -> String {
    format!("{x:.0} MB/s")
}
