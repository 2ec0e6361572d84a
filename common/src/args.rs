//! Command-line groups both binaries take (flattened into their `Config`):
//! broker credentials and the cluster token, each also from a `*_FILE`.

use std::path::PathBuf;

use faena_proto::secret::Secret;

use crate::broker::Credentials;
use crate::secrets::{self, SecretError};

/// A configuration value that cannot work, with what to change.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerAuth {
    #[arg(long, env = "FAENA_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    #[arg(long, env = "FAENA_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    #[arg(long, env = "FAENA_MQTT_PASSWORD_FILE")]
    pub mqtt_password_file: Option<PathBuf>,
}

impl BrokerAuth {
    /// Credentials when a user name is given (a password alone is an error).
    pub fn credentials(&self) -> Result<Option<Credentials>, SecretError> {
        let password =
            secrets::resolve("FAENA_MQTT_PASSWORD", self.mqtt_password.as_deref(), self.mqtt_password_file.as_deref())?;
        match (&self.mqtt_username, password) {
            (Some(username), password) => {
                Ok(Some(Credentials { username: username.clone(), password: password.unwrap_or_default() }))
            }
            (None, Some(_)) => {
                Err(SecretError::Orphan { name: "FAENA_MQTT_PASSWORD".into(), needs: "FAENA_MQTT_USERNAME".into() })
            }
            (None, None) => Ok(None),
        }
    }

    pub fn is_set(&self) -> bool {
        self.mqtt_username.is_some() || self.mqtt_password.is_some() || self.mqtt_password_file.is_some()
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterToken {
    /// Shared secret workers present to the master over gRPC.
    #[arg(long, env = "FAENA_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    #[arg(long, env = "FAENA_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

impl ClusterToken {
    pub fn resolve(&self) -> Result<Option<Secret>, SecretError> {
        secrets::resolve("FAENA_CLUSTER_TOKEN", self.cluster_token.as_deref(), self.cluster_token_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_need_a_user_name() {
        let none = BrokerAuth::default();
        assert!(none.credentials().expect("ok").is_none() && !none.is_set());
        let user =
            BrokerAuth { mqtt_username: Some("u".into()), mqtt_password: Some("p".into()), ..Default::default() };
        let creds = user.credentials().expect("ok").expect("some");
        assert_eq!((creds.username.as_str(), creds.password.expose()), ("u", "p"));
        let orphan = BrokerAuth { mqtt_password: Some("p".into()), ..Default::default() };
        assert!(matches!(orphan.credentials(), Err(SecretError::Orphan { .. })));
        let token = ClusterToken { cluster_token: Some("t".into()), cluster_token_file: None };
        assert_eq!(token.resolve().expect("ok").map(|t| t.expose().to_owned()).as_deref(), Some("t"));
    }
}
