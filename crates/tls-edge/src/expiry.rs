//! `tandem_certificate_not_after_timestamp_seconds`: the expiry of the certificate each host is
//! served with, one series per host. The series are made at scrape time from the published
//! certificate set, so 10,000 hosts cost the certificate set and nothing more between scrapes
//! (a gauge child per host held ~750 bytes of label strings and descriptors each).

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::cert_store::CertStore;

const NAME: &str = "tandem_certificate_not_after_timestamp_seconds";
const HELP: &str = "Expiry (notAfter, unix time) of the certificate served per Secret and host.";

/// Collects one gauge per host served a certificate from a Secret (the default certificate is
/// not a host's).
pub struct CertificateExpiry {
    desc: Desc,
    tier: &'static str,
    certs: Arc<CertStore>,
}

impl CertificateExpiry {
    pub fn new(certs: Arc<CertStore>, tier: k8s_sync::Tier) -> Result<Self, prometheus::Error> {
        let tier = tier.as_str();
        let const_labels = HashMap::from([("tier".to_owned(), tier.to_owned())]);
        let labels = ["namespace", "secret", "host"].map(str::to_owned).to_vec();
        let desc = Desc::new(NAME.into(), HELP.into(), labels, const_labels)?;
        Ok(Self { desc, tier, certs })
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

impl Collector for CertificateExpiry {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let set = self.certs.current();
        let mut metrics: Vec<Metric> = set
            .hosts()
            .filter_map(|(host, cert)| {
                let secret = cert.secret.as_ref()?;
                let mut gauge = Gauge::default();
                gauge.set_value(cert.not_after as f64);
                let mut m = Metric::default();
                // Sorted by label name, as the registry's own series are.
                m.set_label(vec![
                    label("host", &host),
                    label("namespace", &secret.namespace),
                    label("secret", &secret.name),
                    label("tier", self.tier),
                ]);
                m.set_gauge(gauge);
                Some(m)
            })
            .collect();
        // By host (the first label), for a stable exposition.
        let host = |m: &Metric| m.get_label().first().map(|l| l.value().to_owned());
        metrics.sort_by_cached_key(host);
        let mut family = MetricFamily::default();
        family.set_name(NAME.to_owned());
        family.set_help(HELP.to_owned());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_store::{CertSet, ParsedCert};
    use k8s_sync::ObjectKey;
    use proxy::metrics::Metrics;

    #[test]
    fn one_series_per_host_served_from_a_secret() {
        let metrics = Metrics::new(k8s_sync::Tier::TlsEdge);
        let fallback = Arc::new(ParsedCert::self_signed().unwrap());
        let store = Arc::new(CertStore::new(CertSet::new(fallback.clone()), &metrics));
        let collector = CertificateExpiry::new(store.clone(), k8s_sync::Tier::TlsEdge).unwrap();
        assert!(collector.collect()[0].get_metric().is_empty());

        let mut from_secret = ParsedCert::self_signed().unwrap();
        from_secret.secret = Some(ObjectKey::new("shop", "brand-tls"));
        let from_secret = Arc::new(from_secret);
        let mut set = CertSet::new(fallback.clone());
        set.set("b.example", Some(from_secret.clone()));
        set.set("*.a.example", Some(from_secret.clone()));
        // A host given the fallback (no Secret) has no series.
        set.set("c.example", Some(fallback));
        store.publish(set);

        let families = collector.collect();
        let series: Vec<(Vec<(String, String)>, f64)> = families[0]
            .get_metric()
            .iter()
            .map(|m| {
                let labels = m.get_label().iter();
                let labels = labels.map(|l| (l.name().to_owned(), l.value().to_owned()));
                (labels.collect(), m.get_gauge().value())
            })
            .collect();
        let want = |host: &str| {
            let l = [
                ("host", host),
                ("namespace", "shop"),
                ("secret", "brand-tls"),
                ("tier", "tls-edge"),
            ];
            let l = l.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec();
            (l, from_secret.not_after as f64)
        };
        assert_eq!(series, vec![want("*.a.example"), want("b.example")]);
    }
}
