//! The certificates etcd requires of its clients, made once per
//! environment (`boshctl up`, the test harness).
//!
//! etcd holds every credential boshd has (the API token, generated
//! variables and CA keys, NATS passwords). It therefore runs with
//! `--client-cert-auth`: a local user who can reach its port but cannot
//! read our client key gets nothing. [`EtcdPki`] makes the certificates for
//! that: a CA, a server (and peer) certificate for loopback, and one client
//! certificate, all in one 0700 directory with 0600 keys. The CA's key is
//! not kept: nothing issues certificates later, and a key that does not
//! exist cannot be stolen.
//!
//! Feature `pki`, apart from the etcd client (feature `store`, which
//! includes it): `boshctl up` makes the certificates and hands them to etcd
//! and boshd without ever talking to etcd itself.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate could not be made.
    #[error("cannot make etcd certificates in {dir}")]
    Certificate {
        /// The certificate directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
}

/// Result alias for certificate work.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client identity for etcd: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// Our client certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The `boshd` flags that name this identity (`--etcd-ca`,
    /// `--etcd-cert`, `--etcd-key`).
    pub fn boshd_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for (flag, path) in
            [("--etcd-ca", &self.ca), ("--etcd-cert", &self.cert), ("--etcd-key", &self.key)]
        {
            args.push(flag.into());
            args.push(path.into());
        }
        args
    }
}

/// A directory of certificates for one etcd and its clients, made once
/// by [`EtcdPki::ensure`].
#[derive(Debug, Clone)]
pub struct EtcdPki {
    dir: PathBuf,
}

/// The files an [`EtcdPki`] holds; the set is complete or remade.
const PKI_FILES: [&str; 5] = ["ca.crt", "server.crt", "server.key", "client.crt", "client.key"];

impl EtcdPki {
    /// The certificates in `dir`, made there (dir 0700, keys 0600) unless
    /// a complete set exists: a restarted etcd keeps the identity its
    /// clients trust.
    pub fn ensure(dir: &Path) -> Result<EtcdPki> {
        let io = |source| Error::Io { path: dir.to_path_buf(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        // An existing directory keeps its mode: tighten it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let pki = EtcdPki { dir: dir.to_path_buf() };
        if PKI_FILES.iter().all(|f| dir.join(f).is_file()) {
            return Ok(pki);
        }
        let cert_err = |source| Error::Certificate { dir: dir.to_path_buf(), source };

        let ca_key = KeyPair::generate().map_err(cert_err)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("bosh-rs etcd CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(cert_err)?;
        let issuer = Issuer::new(ca, ca_key);

        // etcd's own certificate serves clients and, with both usages,
        // authenticates it to its peers (peer TLS on the same CA).
        let server_key = KeyPair::generate().map_err(cert_err)?;
        let mut server = CertificateParams::default();
        server.distinguished_name = name("etcd");
        server.is_ca = IsCa::ExplicitNoCa;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        server.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            SanType::DnsName("localhost".try_into().map_err(cert_err)?),
        ];
        let server_cert = server.signed_by(&server_key, &issuer).map_err(cert_err)?;

        let client_key = KeyPair::generate().map_err(cert_err)?;
        let mut client = CertificateParams::default();
        client.distinguished_name = name("boshd");
        client.is_ca = IsCa::ExplicitNoCa;
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).map_err(cert_err)?;

        // Keys first and the CA last: a crash in between leaves an
        // incomplete set, which the next call remakes.
        for (file, pem) in [
            ("server.key", server_key.serialize_pem()),
            ("client.key", client_key.serialize_pem()),
            ("server.crt", server_cert.pem()),
            ("client.crt", client_cert.pem()),
            ("ca.crt", ca_cert.pem()),
        ] {
            write_private(&dir.join(file), pem.as_bytes())?;
        }
        Ok(pki)
    }

    /// The CA certificate clients verify etcd with.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The client identity (for boshd, the tests, `etcdctl`).
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca(),
            cert: self.dir.join("client.crt"),
            key: self.dir.join("client.key"),
        }
    }

    /// etcd's flags for client-certificate authentication on its client
    /// and peer ports (the URLs must be `https://`).
    pub fn etcd_args(&self) -> Vec<OsString> {
        let (ca, cert, key) = (self.ca(), self.dir.join("server.crt"), self.dir.join("server.key"));
        let mut args: Vec<OsString> = Vec::new();
        for prefix in ["", "peer-"] {
            args.push(format!("--{prefix}client-cert-auth").into());
            for (flag, path) in [("trusted-ca-file", &ca), ("cert-file", &cert), ("key-file", &key)]
            {
                args.push(format!("--{prefix}{flag}").into());
                args.push(path.into());
            }
        }
        args
    }

    /// `etcdctl`'s flags for the client identity.
    pub fn etcdctl_args(&self) -> Vec<OsString> {
        let c = self.client();
        let mut args = Vec::new();
        for (flag, path) in [("--cacert", c.ca), ("--cert", c.cert), ("--key", c.key)] {
            args.push(flag.into());
            args.push(path.into_os_string());
        }
        args
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "bosh-rs");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Writes a file readable by its owner only (created 0600, never wider
/// for a moment).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // An existing file keeps its mode: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// The PKI directory is private, every file in it is 0600, and a second
    /// call keeps the certificates clients already trust.
    #[test]
    fn pki_files_are_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etcd-tls");
        let pki = EtcdPki::ensure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in PKI_FILES {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let ca = std::fs::read(pki.ca()).unwrap();
        EtcdPki::ensure(&dir).unwrap();
        assert_eq!(std::fs::read(pki.ca()).unwrap(), ca);
        assert!(!dir.join("ca.key").exists(), "the CA key is not kept");
    }
}
