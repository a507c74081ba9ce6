//! The typed hello-world service 1.1.0: counts each name's visits in the `kv` service, which
//! it calls through the typed kv client its `Host` gives it.

use graft::{Error, Host, Remote, Service};
use graft_hello_interface::Hello;
use graft_kv_interface::KvClient;

/// The service: a client of `kv`.
#[derive(Debug)]
pub struct Greeter {
    kv: KvClient<Remote>,
}

impl Service for Greeter {
    fn create(host: Host) -> Result<Self, Error> {
        Ok(Greeter { kv: host.client("kv") })
    }
}

impl Greeter {
    fn visit(&self, name: &str) -> Result<u64, String> {
        let key = format!("visits/{name}");
        let seen = match self.kv.get(&key).map_err(|e| e.to_string())? {
            Some(bytes) => u64::from_le_bytes(bytes.try_into().map_err(|_| "a bad count")?),
            None => 0,
        };
        self.kv.put(&key, &(seen + 1).to_le_bytes()).map_err(|e| e.to_string())?;
        Ok(seen + 1)
    }
}

impl Hello for Greeter {
    fn greet(&self, name: &str) -> String {
        match self.visit(name) {
            Ok(visits) => format!("hello, {name} (visit {visits})"),
            Err(error) => format!("hello, {name} (visits unknown: {error})"),
        }
    }
    fn ping(&self) {}
}

graft::export_service!(Greeter, name: "hello", version: "1.1.0", interface: Hello,
                       dependencies: ["kv" @ "^2"]);
