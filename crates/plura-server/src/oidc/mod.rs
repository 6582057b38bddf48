//! Sign-in through the company's identity provider: OpenID Connect's authorization code flow,
//! with PKCE, state and nonce, as a relying party built on the `openidconnect` crate, which
//! checks the ID token's signature, issuer, audience, expiry and nonce.
//!
//! The provider's metadata and keys are discovered when first needed, not at start: a server
//! whose provider is down still starts, and its local users and API tokens still get in. They are
//! believed for a few minutes, so keys the provider rotates are picked up without a restart.

mod flow;
mod refusal;
mod roles;

pub use flow::{FLOW_COOKIE, FLOW_LIFETIME, Flow};
pub use refusal::Refusal;
pub use roles::{Granted, RoleRules, user_name};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::url::Url;
use openidconnect::{
    AccessToken, AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims,
    IdTokenFields, IssuerUrl, LogoutRequest, OAuth2TokenResponse, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use crate::store::SsoPerson;

/// The path the provider sends the browser back to, under the public URL.
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// Scopes asked for unless told otherwise.
pub const DEFAULT_SCOPES: &str = "openid profile email groups";
/// How long the provider's metadata and keys are believed before they are fetched again.
const METADATA_FRESH_FOR: Duration = Duration::from_secs(300);
/// How long old metadata still serves while the provider cannot be reached to renew it.
const METADATA_STALE_FOR: Duration = Duration::from_secs(3600);
/// How long one call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server is set up to use an identity provider, as the command line said.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client, proven by PKCE alone.
    pub client_secret: Option<String>,
    /// The address people reach the console at.
    pub public_url: String,
    pub scopes: Vec<String>,
    pub roles: RoleRules,
    /// Trust the provider's certificate through this CA (PEM) as well as the system's.
    pub ca_file: Option<PathBuf>,
}

/// Claims besides the standard ones, whatever they are: the role claim is one of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenAnswer = StandardTokenResponse<IdFields, CoreTokenType>;
type Client = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery found: a client for this provider, and where its sign-outs end.
struct Provider {
    client: Client,
    /// The signing algorithms the provider says it uses, the symmetric ones left out.
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    end_session: Option<Url>,
    fetched: Instant,
}

/// A browser's way to the provider: where to send it, and the cookie that holds the flow.
pub struct Start {
    pub url: Url,
    pub flow: Flow,
}

/// What the provider sent the browser back with.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The provider that answered (RFC 9207), when it says.
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

pub struct RelyingParty {
    settings: OidcSettings,
    issuer: IssuerUrl,
    public_url: Url,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

impl RelyingParty {
    /// Checks the settings; reaches nothing yet.
    pub fn new(settings: OidcSettings) -> anyhow::Result<Self> {
        secure_url(&settings.issuer, "--oidc-issuer")?;
        let public_url = secure_url(&settings.public_url, "--public-url")?;
        if !matches!(public_url.path(), "" | "/") || public_url.query().is_some() {
            anyhow::bail!(
                "--public-url {} has a path or query: give the console's address alone \
                 (https://fleet.example.com)",
                settings.public_url
            );
        }
        if !settings.scopes.iter().any(|s| s == "openid") {
            anyhow::bail!("--oidc-scopes must include openid");
        }
        if settings.roles.is_empty() {
            anyhow::bail!(
                "give --oidc-admin, --oidc-operator or --oidc-monitor with the values of the \
                 {} claim that make each role: without them nobody may sign in",
                settings.roles.claim
            );
        }
        // As given, not normalised: the provider's metadata must name it exactly so.
        let issuer = IssuerUrl::new(settings.issuer.clone())?;
        let mut http = reqwest::Client::builder()
            // A provider's answer is never a redirect to follow: one would be a way to make the
            // server call elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT / 2);
        if let Some(file) = &settings.ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("cannot read --oidc-ca-file {}", file.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--oidc-ca-file {} is not PEM", file.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            issuer,
            public_url,
            http: http
                .build()
                .context("cannot make the identity provider's client")?,
            settings,
            provider: tokio::sync::Mutex::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The console's address, without a trailing slash.
    pub fn public_url(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }

    /// Whether cookies must be sent over HTTPS only (the console is reached over HTTPS).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// Begins a sign-in: where to send the browser, with a new flow for its cookie.
    pub async fn start(&self) -> Result<Start, Refusal> {
        let provider = self.provider().await?;
        let flow = Flow::begin();
        let (state, nonce) = (flow.state(), flow.nonce());
        let mut request = provider.client.authorize_url(
            AuthenticationFlow::<openidconnect::core::CoreResponseType>::AuthorizationCode,
            move || state,
            move || nonce,
        );
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.set_pkce_challenge(flow.pkce_challenge()).url();
        Ok(Start { url, flow })
    }

    /// Checks the provider's answer for the browser holding `flow` and says who signed in, with
    /// the role their claims give; a refusal says why not, as a person can act on it.
    pub async fn finish(
        &self,
        callback: Callback,
        flow: Option<Flow>,
    ) -> Result<SsoPerson, Refusal> {
        if let Some(error) = callback.error {
            return Err(Refusal::ProviderSaid {
                error,
                description: callback.error_description.unwrap_or_default(),
            });
        }
        let flow = flow
            .filter(|flow| !flow.expired(plura_proto::Timestamp::now()))
            .ok_or(Refusal::NoFlow)?;
        if !callback.state.as_deref().is_some_and(|s| flow.is_state(s)) {
            return Err(Refusal::StateMismatch);
        }
        if let Some(iss) = callback.iss.filter(|iss| iss != self.issuer.as_str()) {
            return Err(Refusal::WrongIssuer(iss));
        }
        let code = callback.code.ok_or(Refusal::NoCode)?;
        let provider = self.provider().await?;
        let answer = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refusal::TokenExchange(chain(&e)))?
            .set_pkce_verifier(flow.pkce_verifier())
            .request_async(&self.http)
            .await
            .map_err(|e| Refusal::TokenExchange(chain(&e)))?;
        let id_token = answer.extra_fields().id_token().ok_or(Refusal::NoIdToken)?;
        let verifier = provider
            .client
            .id_token_verifier()
            .set_allowed_algs(provider.algorithms.iter().cloned());
        let claims = id_token
            .claims(&verifier, &flow.nonce())
            .map_err(|e| Refusal::from_claims(e, &self.settings.client_id))?;
        self.person(&provider, answer.access_token(), claims).await
    }

    /// Who the checked ID token (and the UserInfo answer, when it lacks something) says the
    /// person is, with the role their claims give.
    async fn person(
        &self,
        provider: &Provider,
        access_token: &AccessToken,
        claims: &IdTokenClaims<OtherClaims, CoreGenderClaim>,
    ) -> Result<SsoPerson, Refusal> {
        let subject = claims.subject().to_string();
        let mut other = claims.additional_claims().0.clone();
        let mut names: Vec<Option<String>> = vec![
            claims.preferred_username().map(|n| n.to_string()),
            claims.email().map(|e| e.to_string()),
            claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        ];
        // Most providers put groups (and often names) in the UserInfo answer rather than the ID
        // token.
        if self.settings.roles.values(&other).is_none() || names.iter().all(Option::is_none) {
            let request = provider
                .client
                .user_info(access_token.clone(), Some(claims.subject().clone()));
            if let Ok(request) = request {
                let info: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                    .request_async(&self.http)
                    .await
                    .map_err(|e| Refusal::UserInfo(chain(&e)))?;
                other.extend(info.additional_claims().0.clone());
                names.push(info.preferred_username().map(|n| n.to_string()));
                names.push(info.email().map(|e| e.to_string()));
            }
        }
        let name = user_name(
            &names.iter().map(Option::as_deref).collect::<Vec<_>>(),
            &subject,
        );
        let values = self.settings.roles.values(&other);
        let Some(granted) = self.settings.roles.grant(values.as_deref().unwrap_or(&[])) else {
            return Err(Refusal::NoRole {
                name,
                claim: self.settings.roles.claim.clone(),
                values,
            });
        };
        Ok(SsoPerson {
            issuer: self.issuer.to_string(),
            subject,
            name,
            role: granted.role,
            because: granted.because,
        })
    }

    /// Where a browser goes to end its sign-in at the provider, then come back to the console;
    /// `None` when the provider has no such endpoint (or cannot be reached now).
    pub async fn end_session_url(&self) -> Option<String> {
        let provider = self.provider().await.ok()?;
        let endpoint = provider.end_session.clone()?;
        let back = PostLogoutRedirectUrl::new(format!("{}/", self.public_url())).ok()?;
        let request = LogoutRequest::from(openidconnect::EndSessionUrl::from_url(endpoint))
            .set_client_id(ClientId::new(self.settings.client_id.clone()))
            .set_post_logout_redirect_uri(back);
        Some(request.http_get_url().to_string())
    }

    /// The provider's metadata and keys: fetched when first needed and again once they are a
    /// few minutes old; one fetch at a time.
    async fn provider(&self) -> Result<Arc<Provider>, Refusal> {
        let mut cached = self.provider.lock().await;
        if let Some(provider) = cached.as_ref()
            && provider.fetched.elapsed() < METADATA_FRESH_FOR
        {
            return Ok(provider.clone());
        }
        match self.discover().await {
            Ok(provider) => {
                let provider = Arc::new(provider);
                *cached = Some(provider.clone());
                Ok(provider)
            }
            Err(e) => match cached.as_ref() {
                Some(old) if old.fetched.elapsed() < METADATA_STALE_FOR => {
                    tracing::warn!("cannot renew the identity provider's metadata: {e}");
                    Ok(old.clone())
                }
                _ => {
                    tracing::error!("cannot reach the identity provider: {e}");
                    Err(Refusal::ProviderUnreachable(e.to_string()))
                }
            },
        }
    }

    async fn discover(&self) -> anyhow::Result<Provider> {
        let metadata = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| anyhow::anyhow!("{} ({})", chain(&e), self.issuer.as_str()))?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|url| url.url().clone());
        let algorithms = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !is_symmetric(alg))
            .cloned()
            .collect();
        let redirect = RedirectUrl::new(format!("{}{CALLBACK_PATH}", self.public_url()))?;
        let client = Client::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(Provider {
            client,
            algorithms,
            end_session,
            fetched: Instant::now(),
        })
    }
}

/// Signatures by a shared secret prove nothing a client secret does not already; the provider's
/// own keys are what an ID token is checked against.
fn is_symmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
            | CoreJwsSigningAlgorithm::None
    )
}

/// `text` as a URL that is HTTPS, or plain HTTP to loopback only (a provider or console on this
/// host, as in tests).
fn secure_url(text: &str, flag: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{flag} {text:?} is not a URL"))?;
    let loopback = match url.host() {
        Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => anyhow::bail!(
            "{flag} {text} is plain HTTP: sign-ins would travel in the clear; use https:// \
             (http:// only to loopback)"
        ),
        other => anyhow::bail!("{flag} {text} is {other}://, not https://"),
    }
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.example.com/realms/x".into(),
            client_id: "plura".into(),
            client_secret: Some("s".repeat(32)),
            public_url: "https://fleet.example.com".into(),
            scopes: DEFAULT_SCOPES.split(' ').map(String::from).collect(),
            roles: RoleRules {
                claim: "groups".into(),
                admin: vec!["admins".into()],
                ..RoleRules::default()
            },
            ca_file: None,
        }
    }

    fn refused(change: impl FnOnce(&mut OidcSettings)) -> String {
        let mut settings = settings();
        change(&mut settings);
        match RelyingParty::new(settings) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn urls_are_https_or_loopback() {
        assert!(RelyingParty::new(settings()).is_ok());
        let mut local = settings();
        local.issuer = "http://127.0.0.1:9000".into();
        local.public_url = "http://localhost:8080/".into();
        let local = RelyingParty::new(local).unwrap();
        assert_eq!(local.public_url(), "http://localhost:8080");
        assert!(!local.secure_cookies());
        assert!(refused(|s| s.issuer = "http://idp.example.com".into()).contains("plain HTTP"));
        assert!(refused(|s| s.public_url = "http://10.0.0.1".into()).contains("--public-url"));
        assert!(refused(|s| s.public_url = "https://x.io/fleet".into()).contains("path"));
        assert!(refused(|s| s.issuer = "ftp://x.io".into()).contains("not https"));
        assert!(refused(|s| s.issuer = "idp".into()).contains("not a URL"));
    }

    #[test]
    fn roles_and_the_openid_scope_are_required() {
        assert!(refused(|s| s.roles.admin.clear()).contains("--oidc-admin"));
        assert!(refused(|s| s.scopes = vec!["email".into()]).contains("openid"));
    }
}
