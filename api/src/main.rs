use clap::Parser;
use genq_api::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    genq_shared::telemetry::init();
    let config = Config::parse();
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "genq-api listening");
    app.run_until_stopped(genq_shared::telemetry::shutdown_signal())
        .await
}
