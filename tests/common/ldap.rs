//! A real OpenLDAP `slapd` (Debian's package, installed by scripts/test.sh) on a free
//! loopback port, with a generated config in a temporary directory (mdb database, the
//! memberof overlay) and a seeded directory: users, groups in a nested OU, a group that is
//! a member of another group, and a user whose name needs escaping in a filter.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=org";
pub const READER_DN: &str = "cn=reader,ou=people,dc=example,dc=org";
pub const READER_PASSWORD: &str = "reader-secret";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PASSWORD: &str = "admin-secret";

/// alice: groups admins and TeamA/Admin; carol and `ann(x)*`: devs, which is in staff;
/// bob: in no group.
const SEED: &str = r"dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: ou=TeamA,ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: TeamA

dn: cn=reader,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
cn: reader
sn: reader
userPassword: reader-secret

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
mail: alice@example.org
departmentNumber: physics

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: C

dn: uid=ann(x)\2A,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: ann(x)*
cn: Ann
sn: X

dn: cn=admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: admins
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=Admin,ou=TeamA,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: Admin
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=devs,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: devs
member: uid=carol,ou=people,dc=example,dc=org
member: uid=ann(x)\2A,ou=people,dc=example,dc=org

dn: cn=staff,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: staff
member: cn=devs,ou=groups,dc=example,dc=org
";

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    /// The ldaps:// port (a certificate for 127.0.0.1 signed by [`Slapd::ca_file`]).
    pub tls_port: u16,
    dir: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 it signs, made with the openssl command.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (installed by scripts/test.sh)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=authgate test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

fn slapd_binary() -> &'static str {
    for candidate in ["/usr/sbin/slapd", "/usr/local/sbin/slapd"] {
        if Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("slapd is not installed: run scripts/test.sh, which installs the Debian package slapd");
}

impl Slapd {
    /// Starts slapd in `dir` and seeds it.
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("slapd");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        make_certificates(&dir);
        let d = dir.display();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             database mdb\nmaxsize 10485760\nsuffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\ndirectory {d}/db\n\
             overlay memberof\nmemberof-group-oc groupOfNames\nmemberof-member-ad member\n\
             memberof-memberof-ad memberOf\nmemberof-refint TRUE\n\
             access to * by dn.exact=\"{READER_DN}\" read by * auth\n\
             TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/cert.pem\n\
             TLSCertificateKeyFile {d}/key.pem\n"
        );
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        std::fs::write(dir.join("seed.ldif"), SEED).unwrap();
        let mut slapd = Self {
            child: None,
            port: 0,
            tls_port: 0,
            dir,
        };
        slapd.run(false);
        let out = Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &slapd.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(slapd.dir.join("seed.ldif"))
            .output()
            .expect("run ldapadd (Debian package ldap-utils, installed by scripts/test.sh)");
        assert!(
            out.status.success(),
            "seeding the directory failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        slapd
    }

    /// Starts slapd on a free port (the same one again after [`Slapd::stop`]).
    fn run(&mut self, same_port: bool) {
        for _ in 0..5 {
            if !same_port {
                self.port = super::free_port();
                self.tls_port = super::free_port();
            }
            let listen = format!("{} {}", self.url(), self.ldaps_url());
            let mut child = Command::new(slapd_binary())
                .arg("-f")
                .arg(self.dir.join("slapd.conf"))
                .args(["-h", &listen, "-d", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start slapd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("slapd did not start (config in {})", self.dir.display());
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The CA that signs the directory's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Stops slapd: connections are refused until [`Slapd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.run(true);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
