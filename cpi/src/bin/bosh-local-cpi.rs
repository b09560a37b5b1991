//! `bosh-local-cpi`: the local CPI (runc container VMs, directory disks)
//! as an executable speaking BOSH's external CPI protocol, one request on
//! stdin and one response on stdout, as every BOSH CPI does. The director
//! runs it through its external path (`boshd --cpi-exe`, or a CPI config's
//! `exec_path`), which is how that path is tested end to end.
//!
//! Where its data lives comes from the CPI's properties (the request's
//! `context`): `data_dir` (required) and `image_cache` (optional);
//! `disabled_methods` (a list) makes it answer those as a stock BOSH CPI
//! does ("Method is not known"), for tests of the director's fallbacks.

use std::io::Read;

use bosh_cpi::local::LocalCpi;
use bosh_cpi::protocol::{Request, serve};
use serde_json::{Value, json};

fn fail(message: String) -> Value {
    json!({"result": null, "error": {"type": "Bosh::Clouds::CloudError", "message": message,
           "ok_to_retry": false}, "log": ""})
}

fn run() -> Value {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return fail(format!("reading the request: {e}"));
    }
    let req: Request = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            return json!({"result": null, "error": {"type": "InvalidCall",
                "message": format!("invalid request: {e}"), "ok_to_retry": false}, "log": ""});
        }
    };
    let Some(dir) = req.context.get("data_dir").and_then(Value::as_str) else {
        return fail("the CPI's properties name no data_dir".into());
    };
    let mut cpi = match LocalCpi::open(std::path::Path::new(dir)) {
        Ok(c) => c,
        Err(e) => return fail(format!("opening {dir}: {e}")),
    };
    if let Some(cache) = req.context.get("image_cache").and_then(Value::as_str) {
        cpi = cpi.with_image_cache(std::path::Path::new(cache));
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    rt.block_on(serve(&cpi, &req))
}

fn main() {
    let response = run();
    println!("{response}");
}
