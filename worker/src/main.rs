use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    genq_shared::telemetry::init();
    let config = genq_worker::Config::parse();
    genq_worker::run(config, genq_shared::telemetry::shutdown_signal()).await
}
