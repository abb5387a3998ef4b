//! mDNS (DNS-SD) for finding hubs on the shop's LAN without configuration (spec §6.3):
//! every node advertises `_poshub._tcp.local.` with its client port and TXT `tenantId`,
//! `storeId`, `nodeId`, `version` (and `tls=1` when the client port serves TLS); devices
//! browse and keep the hubs of their own realm. mdns-sd speaks multicast itself: no avahi.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::domain::Realm;

pub const SERVICE_TYPE: &str = "_poshub._tcp.local.";

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    #[error("mDNS: advertised client address {0:?} is not HOST:PORT")]
    Address(String),
    #[error("mDNS browsing stopped: {0}")]
    Join(String),
}

/// A node's advertisement; dropping it withdraws it and stops the responder.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Keeps a DNS label to letters, digits and `-`.
fn label(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Advertises a node whose devices reach it at `client_addr` (`HOST:PORT`). An address of
/// `0.0.0.0` (or a host name) advertises every address of this machine.
pub fn advertise(
    realm: &Realm,
    node_id: u64,
    client_addr: &str,
    tls: bool,
) -> Result<Advertiser, DiscoveryError> {
    let (host, port) = client_addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| DiscoveryError::Address(client_addr.to_owned()))?;
    let daemon = ServiceDaemon::new()?;
    let instance = label(&format!(
        "pos-hub-{}-{}-{node_id}",
        realm.tenant_id, realm.store_id
    ));
    let host_name = format!("{instance}-{port}.local.");
    let version = env!("CARGO_PKG_VERSION");
    let node = node_id.to_string();
    let properties = [
        ("tenantId", realm.tenant_id.as_str()),
        ("storeId", realm.store_id.as_str()),
        ("nodeId", node.as_str()),
        ("version", version),
        ("tls", if tls { "1" } else { "0" }),
    ];
    let info = match host.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host_name,
            ip,
            port,
            &properties[..],
        )?,
        _ => ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host_name,
            "",
            port,
            &properties[..],
        )?
        .enable_addr_auto(),
    };
    let fullname = info.get_fullname().to_owned();
    daemon.register(info)?;
    tracing::info!(service = %fullname, %client_addr, "advertising on mDNS");
    Ok(Advertiser { daemon, fullname })
}

/// A hub found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub realm: Realm,
    pub node_id: u64,
    /// `HOST:PORT` of its client port.
    pub addr: String,
    pub version: String,
    pub tls: bool,
}

/// Browses for `wait` and returns every hub that answered, of any realm: the caller
/// keeps its own (and can say which others it saw).
pub async fn browse(wait: Duration) -> Result<Vec<Found>, DiscoveryError> {
    tokio::task::spawn_blocking(move || browse_blocking(wait))
        .await
        .map_err(|e| DiscoveryError::Join(e.to_string()))?
}

fn browse_blocking(wait: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + wait;
    let mut found = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let text = |key: &str| {
            service
                .txt_properties
                .get_property_val_str(key)
                .unwrap_or("")
                .to_owned()
        };
        let realm = Realm::new(text("tenantId"), text("storeId"));
        let node_id = text("nodeId").parse().unwrap_or(0);
        // Prefer IPv4 (what shops' Wi-Fi hands out); any address works.
        let mut ips: Vec<IpAddr> = service.addresses.iter().map(|a| a.to_ip_addr()).collect();
        ips.sort_by_key(|ip| (!ip.is_ipv4(), *ip));
        let Some(ip) = ips.first() else { continue };
        let addr = match ip {
            IpAddr::V4(v4) => format!("{v4}:{}", service.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", service.port),
        };
        found.insert(
            service.fullname.clone(),
            Found {
                realm,
                node_id,
                addr,
                version: text("version"),
                tls: text("tls") == "1",
            },
        );
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    let mut hubs: Vec<Found> = found.into_values().collect();
    hubs.sort();
    Ok(hubs)
}
