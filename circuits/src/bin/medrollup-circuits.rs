//! `medrollup-circuits`: see `medrollup_circuits::cli`.

fn main() -> anyhow::Result<()> {
    medrollup_circuits::cli::run()
}
