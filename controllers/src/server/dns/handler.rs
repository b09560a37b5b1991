//! The hickory request handler: BOSH names and the runtime configs'
//! aliases from the in-memory table, other names to the recursors or REFUSED.

use std::net::Ipv4Addr;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record, RecordType, rdata::A};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::forward::Forwarder;
use super::query;
use super::records::Records;

/// TTL of BOSH answers: none, as bosh-dns, so a health change is seen on
/// the next lookup.
const TTL: u32 = 0;

/// The largest UDP payload we answer with when the client offers more
/// (the DNS flag day's 1232 bytes, below common path MTUs).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Answers queries for one BOSH domain.
#[derive(Debug, Clone)]
pub struct Handler {
    records: Records,
    domain: Name,
    forwarder: Option<Forwarder>,
}

impl Handler {
    /// A handler answering `domain` (e.g. `bosh.`) from `records`, and
    /// other names through `forwarder` (`None`: REFUSED).
    pub fn new(records: Records, domain: Name, forwarder: Option<Forwarder>) -> Self {
        let mut domain = domain.to_lowercase();
        domain.set_fqdn(true);
        Handler { records, domain, forwarder }
    }

    /// What an alias name answers (`None`: no alias; `Some(None)`: an
    /// alias that answers nothing now).
    fn alias(&self, name: &Name) -> Option<Option<Vec<Ipv4Addr>>> {
        let text = name.to_ascii();
        let ips = self.records.current().alias(text.trim_end_matches('.'))?;
        Some((!ips.is_empty()).then_some(ips))
    }

    /// The addresses a name under the domain has (`None`: no such name).
    fn lookup(&self, name: &Name) -> Option<Vec<Ipv4Addr>> {
        let keep = name.num_labels().checked_sub(self.domain.num_labels())? as usize;
        let labels: Vec<&str> =
            name.iter().take(keep).map(std::str::from_utf8).collect::<Result<_, _>>().ok()?;
        let question = query::parse(&labels).ok()?;
        let ips = self.records.current().answer(&question);
        (!ips.is_empty()).then_some(ips)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut meta = Metadata::response_from_request(&request.metadata);
        let sent = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            meta.response_code = ResponseCode::NotImp;
            response.send_response(builder.build_no_records(meta)).await
        } else if let Ok(info) = request.request_info() {
            let original = info.query.original();
            let name = original.name().to_lowercase();
            let alias = self.alias(&name);
            if alias.is_some() || self.domain.zone_of(&name) {
                meta.authoritative = true;
                match alias.unwrap_or_else(|| self.lookup(&name)) {
                    None => {
                        meta.response_code = ResponseCode::NXDomain;
                        response.send_response(builder.build_no_records(meta)).await
                    }
                    Some(ips) => {
                        let wants_a =
                            matches!(original.query_type(), RecordType::A | RecordType::ANY);
                        let fit = room_for_a_records(request, edns.as_ref());
                        if wants_a && ips.len() > fit {
                            meta.truncation = true;
                        }
                        let answers: Vec<Record> = if wants_a {
                            ips.iter()
                                .take(fit)
                                .map(|ip| {
                                    Record::from_rdata(
                                        original.name().clone(),
                                        TTL,
                                        RData::A(A(*ip)),
                                    )
                                })
                                .collect()
                        } else {
                            vec![]
                        };
                        response.send_response(builder.build(meta, &answers, [], [], [])).await
                    }
                }
            } else {
                match (&self.forwarder, request.metadata.recursion_desired) {
                    (Some(f), true) => match f.forward(request.as_slice(), meta.id).await {
                        Ok(reply) => relay(builder, meta, reply, &mut response).await,
                        Err(error) => {
                            tracing::warn!(%error, "forwarding failed");
                            meta.response_code = ResponseCode::ServFail;
                            meta.recursion_available = true;
                            response.send_response(builder.build_no_records(meta)).await
                        }
                    },
                    _ => {
                        meta.response_code = ResponseCode::Refused;
                        response.send_response(builder.build_no_records(meta)).await
                    }
                }
            }
        } else {
            meta.response_code = ResponseCode::FormErr;
            response.send_response(builder.build_no_records(meta)).await
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "failed to send a DNS response");
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// Hands a recursor's reply back under our header.
async fn relay<R: ResponseHandler>(
    builder: MessageResponseBuilder<'_>,
    mut meta: Metadata,
    reply: Message,
    response: &mut R,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    meta.response_code = reply.metadata.response_code;
    meta.recursion_available = true;
    meta.truncation = reply.metadata.truncation;
    response
        .send_response(builder.build(
            meta,
            &reply.answers,
            &reply.authorities,
            [],
            &reply.additionals,
        ))
        .await
}

/// How many A records fit the reply: all over TCP; over UDP what fits the
/// client's buffer (512 bytes without EDNS) after the header, question and
/// OPT record, at 16 bytes a record (compressed name, type, class, TTL,
/// length, address).
fn room_for_a_records(request: &Request, edns: Option<&Edns>) -> usize {
    if request.protocol() != Protocol::Udp {
        return usize::MAX;
    }
    let payload = edns.map_or(512, |e| e.max_payload()) as usize;
    let question: usize = request.queries.len() * 4
        + request.request_info().map_or(255, |i| i.query.original().name().len() + 2);
    let opt = if edns.is_some() { 11 } else { 0 };
    payload.saturating_sub(12 + question + opt) / 16
}
