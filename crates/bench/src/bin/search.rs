//! Search: query latency over one tenant of 1,000,000 contacts and 200,000 other records,
//! through the gateway beside the service's own candidate SQL run directly on the same pool
//! in the same run, and the lag from `contact.created` to searchable.
//!
//! The records are generated here from weighted name lists of many cultures and written
//! into the index as the indexer writes them ([`Document::of`]), in bulk; the lag is measured
//! on real contacts created through the gateway, published by the relay through RabbitMQ and
//! applied by the search consumer.
//!
//! `cargo run -p crm-bench --release --bin search`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{
    Samples, Scratch, Summary, machine_line, ms,
    names::{CULTURES, FREE_MAIL, INDUSTRIES, SECTORS, STEMS, SUFFIXES, TITLES, TLDS, list},
    ratio,
    stack::{Services, SignedUp, Stack},
};
use crm_kit::{Db, TenantId, access::Reach};
use crm_search::{
    index::{self, Document, Scope},
    kinds::{self, KINDS, Kind},
    score::Query,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
/// Rows per bulk insert.
const BATCH: usize = 5_000;

#[derive(Parser, Debug)]
#[command(about = "Search latency over a large tenant beside its SQL, and index lag")]
struct Args {
    /// Contacts in the tenant.
    #[arg(long, default_value_t = 1_000_000)]
    contacts: usize,
    /// Accounts, opportunities, leads and tickets in the tenant (half, a quarter, 15% and
    /// 10% of them).
    #[arg(long, default_value_t = 200_000)]
    others: usize,
    /// Reads per term and path in each round.
    #[arg(long, default_value_t = 100)]
    reads: usize,
    /// Measuring rounds over every term; the table quotes the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Contacts created through the gateway for the lag figures.
    #[arg(long, default_value_t = 100)]
    lag_samples: usize,
    /// Hits asked for.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    let scratch = Scratch::create("search").await?;
    let result = run(&scratch, &args).await;
    scratch.cleanup().await;
    result
}

// ---- records -------------------------------------------------------------------------------

/// "shown|ascii" → (shown, ascii), ascii derived when absent.
fn shown_ascii(entry: &str) -> (String, String) {
    match entry.split_once('|') {
        Some((s, a)) => (s.to_owned(), a.to_owned()),
        None => (
            entry.to_owned(),
            entry
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_lowercase(),
        ),
    }
}

/// Draws records of every indexed type, as the owning services show them (REST names).
struct Generator {
    rng: StdRng,
    cultures: Vec<(u32, &'static str, Vec<&'static str>, Vec<&'static str>)>,
    total_weight: u32,
    owners: Vec<Uuid>,
}

impl Generator {
    fn new(owners: Vec<Uuid>) -> Self {
        let cultures: Vec<_> = CULTURES
            .iter()
            .map(|c| (c.weight, c.calling_code, list(c.first), list(c.last)))
            .collect();
        Self {
            rng: StdRng::seed_from_u64(20_261_202),
            total_weight: cultures.iter().map(|c| c.0).sum(),
            cultures,
            owners,
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.gen_range(0..items.len())]
    }

    fn owner(&mut self) -> String {
        self.owners[self.rng.gen_range(0..self.owners.len())].to_string()
    }

    /// (first, last, calling code), each name as (shown, ascii).
    fn person(&mut self) -> ((String, String), (String, String), &'static str) {
        let mut w = self.rng.gen_range(0..self.total_weight);
        let mut i = 0;
        while w >= self.cultures[i].0 {
            w -= self.cultures[i].0;
            i += 1;
        }
        let (first, last) = (self.cultures[i].2.clone(), self.cultures[i].3.clone());
        let code = self.cultures[i].1;
        (
            shown_ascii(self.pick(&first)),
            shown_ascii(self.pick(&last)),
            code,
        )
    }

    fn domain(&mut self) -> String {
        let stem = shown_ascii(self.pick(&list(STEMS))).1;
        format!("{stem}{}", self.pick(&list(TLDS)))
    }

    fn contact(&mut self, n: usize) -> Map<String, Json> {
        let (f, l, code) = self.person();
        let mut r = Map::new();
        r.insert("firstName".into(), json!(f.0));
        r.insert("lastName".into(), json!(l.0));
        if self.rng.gen_bool(0.95) {
            let local = if self.rng.gen_bool(0.6) {
                format!("{}.{}{n}", f.1, l.1)
            } else {
                format!("{}{}{n}", f.1.chars().next().unwrap_or('x'), l.1)
            };
            let domain = if self.rng.gen_bool(0.5) {
                self.domain()
            } else {
                self.pick(&list(FREE_MAIL)).to_owned()
            };
            r.insert("email".into(), json!(format!("{local}@{domain}")));
        }
        if self.rng.gen_bool(0.88) {
            let (a, b) = (
                self.rng.gen_range(0..1000u32),
                self.rng.gen_range(0..10_000_000u32),
            );
            r.insert("phone".into(), json!(format!("+{code} {a:03} {b:07}")));
            r.insert("phoneE164".into(), json!(format!("+{code}{a:03}{b:07}")));
        }
        if self.rng.gen_bool(0.85) {
            r.insert("title".into(), json!(self.pick(&list(TITLES))));
        }
        r.insert("ownerUserId".into(), json!(self.owner()));
        r
    }

    fn company(&mut self) -> (String, String, String) {
        let stem = shown_ascii(self.pick(&list(STEMS)));
        let sector = self.pick(&list(SECTORS));
        let name = format!("{} {sector} {}", stem.0, self.pick(&list(SUFFIXES)));
        (name, stem.1, sector.to_lowercase())
    }

    fn account(&mut self, n: usize) -> Map<String, Json> {
        let (name, stem, sector) = self.company();
        let mut r = Map::new();
        r.insert("name".into(), json!(name));
        if self.rng.gen_bool(0.85) {
            let tld = self.pick(&list(TLDS));
            r.insert(
                "website".into(),
                json!(format!("https://www.{stem}-{sector}-{n}{tld}")),
            );
        }
        if self.rng.gen_bool(0.9) {
            r.insert("industry".into(), json!(self.pick(&list(INDUSTRIES))));
        }
        r.insert("ownerUserId".into(), json!(self.owner()));
        r
    }

    fn opportunity(&mut self) -> Map<String, Json> {
        let (company, _, _) = self.company();
        let what = self.pick(&["Renewal", "Expansion", "New business", "Pilot", "Upsell"]);
        let year = self.rng.gen_range(2024..2028);
        let mut r = Map::new();
        r.insert("name".into(), json!(format!("{company} — {what} {year}")));
        r.insert(
            "stage".into(),
            json!(self.pick(&[
                "Qualification",
                "Discovery",
                "Proposal",
                "Negotiation",
                "Won",
                "Lost"
            ])),
        );
        r.insert("ownerUserId".into(), json!(self.owner()));
        r
    }

    fn lead(&mut self, n: usize) -> Map<String, Json> {
        let (f, l, _) = self.person();
        let (company, stem, _) = self.company();
        let mut r = Map::new();
        r.insert("firstName".into(), json!(f.0));
        r.insert("lastName".into(), json!(l.0));
        r.insert(
            "email".into(),
            json!(format!("{}.{}{n}@{stem}.com", f.1, l.1)),
        );
        r.insert("company".into(), json!(company));
        r.insert("ownerUserId".into(), json!(self.owner()));
        r
    }

    fn ticket(&mut self, n: usize) -> Map<String, Json> {
        let what = self.pick(&[
            "Cannot log in",
            "Invoice shows the wrong amount",
            "Export times out",
            "Import rejected rows",
            "Webhook deliveries failing",
            "Password reset e-mail not received",
            "Slow search results",
            "Cannot change the deal stage",
        ]);
        let (company, _, _) = self.company();
        let mut r = Map::new();
        r.insert("subject".into(), json!(format!("{what} (#{n})")));
        r.insert(
            "description".into(),
            json!(format!("Reported by {company}: {}", what.to_lowercase())),
        );
        r.insert("assigneeUserId".into(), json!(self.owner()));
        r
    }
}

/// Writes `docs` into the index as the indexer does, in one statement.
async fn insert(
    adm: &DatabaseConnection,
    tenant: Uuid,
    docs: Vec<(&'static Kind, Uuid, Map<String, Json>)>,
) -> anyhow::Result<()> {
    let n = docs.len();
    let (mut ids, mut types, mut owners) = (Vec::with_capacity(n), Vec::new(), Vec::new());
    let (mut records, mut fields, mut folded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut titles, mut texts) = (Vec::new(), Vec::new());
    for (kind, id, record) in docs {
        let d = Document::of(kind, &record);
        ids.push(id);
        types.push(kind.name.to_owned());
        owners.push(d.owner.unwrap_or_default());
        records.push(Json::Object(record).to_string());
        fields.push(Json::Object(d.fields).to_string());
        folded.push(Json::Object(d.folded).to_string());
        titles.push(d.title);
        texts.push(d.trgm_text);
    }
    adm.execute_raw(stmt(
        "INSERT INTO search.documents (tenant_id, entity_type, entity_id, version, owner_user_id, \
             record, fields, folded, title, trgm_text, tsv) \
         SELECT $1, u.t, u.id, 1, u.o, u.r::jsonb, u.f::jsonb, u.d::jsonb, u.ti, u.x, \
             to_tsvector('simple', u.x) \
         FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[]) AS u(id, t, o, r, f, d, ti, x)",
        [
            tenant.into(),
            ids.into(),
            types.into(),
            owners.into(),
            records.into(),
            fields.into(),
            folded.into(),
            titles.into(),
            texts.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Fills the tenant's index: the secondary indexes are dropped while loading and built
/// again from their own definitions afterwards, as a bulk load does.
async fn seed(
    adm: &DatabaseConnection,
    tenant: Uuid,
    owners: Vec<Uuid>,
    args: &Args,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let indexes: Vec<(String, String)> = adm
        .query_all_raw(stmt(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def \
             FROM pg_index i WHERE i.indrelid = 'search.documents'::regclass \
               AND NOT i.indisprimary AND NOT i.indisunique",
            [],
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "def")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    for (name, _) in &indexes {
        adm.execute_unprepared(&format!("DROP INDEX {name}"))
            .await?;
    }
    let mut g = Generator::new(owners);
    let (accounts, opportunities, leads) =
        (args.others / 2, args.others / 4, args.others * 15 / 100);
    let tickets = args.others - accounts - opportunities - leads;
    let plan: [(&'static Kind, usize); 5] = [
        (&kinds::CONTACT, args.contacts),
        (&kinds::ACCOUNT, accounts),
        (&kinds::OPPORTUNITY, opportunities),
        (&kinds::LEAD, leads),
        (&kinds::TICKET, tickets),
    ];
    for (kind, count) in plan {
        let t = Instant::now();
        let mut n = 0;
        while n < count {
            let mut docs = Vec::with_capacity(BATCH);
            for _ in 0..BATCH.min(count - n) {
                n += 1;
                let record = match kind.name {
                    "contact" => g.contact(n),
                    "account" => g.account(n),
                    "opportunity" => g.opportunity(),
                    "lead" => g.lead(n),
                    _ => g.ticket(n),
                };
                docs.push((kind, Uuid::now_v7(), record));
            }
            insert(adm, tenant, docs).await?;
        }
        eprintln!(
            "{count} {} documents in {:.1} s",
            kind.name,
            t.elapsed().as_secs_f64()
        );
    }
    // The needles: a rare name, written as the indexer writes any contact.
    let mut docs = Vec::new();
    for i in 1..=10 {
        let mut r = g.contact(args.contacts + i);
        r.insert("firstName".into(), json!("Anastasia"));
        r.insert("lastName".into(), json!("Zolotareva"));
        r.insert(
            "email".into(),
            json!(format!("anastasia.zolotareva{i}@example.org")),
        );
        docs.push((&kinds::CONTACT, Uuid::now_v7(), r));
    }
    insert(adm, tenant, docs).await?;
    adm.execute_unprepared("SET maintenance_work_mem = '1GB'")
        .await?;
    for (name, def) in &indexes {
        let t = Instant::now();
        adm.execute_unprepared(def)
            .await
            .with_context(|| format!("rebuilding {name}"))?;
        eprintln!("index {name} built in {:.1} s", t.elapsed().as_secs_f64());
    }
    adm.execute_unprepared("VACUUM (ANALYZE) search.documents")
        .await?;
    eprintln!("index loaded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- queries -------------------------------------------------------------------------------

/// One measured term.
struct Term {
    class: &'static str,
    q: String,
}

async fn gateway_search(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
    limit: usize,
) -> anyhow::Result<Json> {
    Ok(http
        .get(format!("{base}/search"))
        .query(&[("q", q), ("limit", &limit.to_string())])
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The candidate SQL the service runs for a caller who reaches every record and field.
async fn direct(db: &Db, tenant: TenantId, q: &Query) -> anyhow::Result<usize> {
    let scopes: Vec<Scope> = KINDS
        .iter()
        .copied()
        .map(|k| Scope {
            kind: k,
            reach: Reach::All,
            visible: k.fields.iter().map(|f| f.name).collect(),
        })
        .collect();
    let tx = db.tenant_tx(tenant).await?;
    let found = index::candidates(&tx, &scopes, q).await?;
    tx.rollback().await?;
    Ok(found.len())
}

/// Documents whose indexed text contains the query as a fragment or prefix word.
async fn matches(adm: &DatabaseConnection, tenant: Uuid, q: &Query) -> anyhow::Result<i64> {
    let tsq = q.prefix_tsquery();
    let r = adm
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM search.documents WHERE tenant_id = $1 AND NOT deleted \
               AND (trgm_text LIKE $2 OR ($3::text IS NOT NULL AND tsv @@ to_tsquery('simple', $3)))",
            [tenant.into(), q.like().into(), tsq.into()],
        ))
        .await?
        .context("count")?;
    Ok(r.try_get("", "n")?)
}

fn median_by_p95(mut rounds: Vec<Summary>) -> Summary {
    rounds.sort_by_key(|s| s.p95);
    rounds[rounds.len() / 2]
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let cancel = CancellationToken::new();
    let with = Services {
        accounts_events: true,
        search: true,
        ..Services::default()
    };
    let stack = scratch.stack(with, 20, &cancel).await?;
    let http = reqwest::Client::new();
    let SignedUp {
        token,
        tenant,
        admin,
    } = stack.signup(&http, PASSWORD).await?;
    let Stack { base, db } = stack;
    let token: Arc<str> = token.into();
    let tenant_uuid = tenant.uuid();
    let adm = Database::connect(&scratch.admin_url).await?;
    let mut owners = vec![admin];
    owners.extend((0..19).map(|_| Uuid::now_v7()));
    seed(&adm, tenant_uuid, owners, args).await?;

    println!("{}", machine_line());
    println!();

    // A contact in the middle of the load, for e-mail and phone fragments.
    let sample = adm
        .query_one_raw(stmt(
            "SELECT fields->>'email' AS email, fields->>'phoneDigits' AS digits \
             FROM search.documents WHERE tenant_id = $1 AND entity_type = 'contact' \
               AND fields ? 'email' AND fields ? 'phoneDigits' \
             ORDER BY entity_id OFFSET $2 LIMIT 1",
            [tenant_uuid.into(), ((args.contacts / 2) as i64).into()],
        ))
        .await?
        .context("sample contact")?;
    let email: String = sample.try_get("", "email")?;
    let digits: String = sample.try_get("", "digits")?;
    let local = email.split('@').next().unwrap_or_default().to_owned();
    let terms = [
        Term {
            class: "selective (a rare surname, 10 contacts)",
            q: "zolotareva".into(),
        },
        Term {
            class: "prefix of the rare surname",
            q: "zolot".into(),
        },
        Term {
            class: "typo in the rare surname",
            q: "zolotraeva".into(),
        },
        Term {
            class: "e-mail fragment (local part)",
            q: local,
        },
        Term {
            class: "phone fragment (last 7 digits)",
            q: digits[digits.len().saturating_sub(7)..].to_owned(),
        },
        Term {
            class: "prefix, 2 letters",
            q: "an".into(),
        },
        Term {
            class: "non-selective (a common first name)",
            q: "john".into(),
        },
        Term {
            class: "non-selective (a common word)",
            q: "manager".into(),
        },
    ];

    // A first read of each term checks both paths answer, and warms the caches.
    for t in &terms {
        let body = gateway_search(&http, &base, &token, &t.q, args.limit).await?;
        let hits = body["items"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(hits > 0, "no hit for {:?} through the gateway", t.q);
        direct(&db, tenant, &Query::parse(&t.q).context("query")?).await?;
    }
    println!(
        "### Search over {} contacts and {} other records in one tenant ({} hits asked for; \
         median of {} rounds of {} reads per path)",
        args.contacts, args.others, args.limit, args.rounds, args.reads
    );
    println!();
    println!(
        "| term | q | matching documents | gateway p50 / p95 / p99 (ms) | direct SQL p50 / p95 / p99 (ms) | p95 ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for t in &terms {
        let query = Query::parse(&t.q).context("query")?;
        let (mut gw_rounds, mut sql_rounds) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let (mut gw, mut sql) = (Samples::default(), Samples::default());
            for i in 0..args.reads {
                let run_gateway = async {
                    let t0 = Instant::now();
                    gateway_search(&http, &base, &token, &t.q, args.limit).await?;
                    anyhow::Ok(t0.elapsed())
                };
                let run_sql = async {
                    let t0 = Instant::now();
                    direct(&db, tenant, &query).await?;
                    anyhow::Ok(t0.elapsed())
                };
                // Alternate who goes first.
                if (i + round) % 2 == 0 {
                    gw.record(run_gateway.await?, 1);
                    sql.record(run_sql.await?, 1);
                } else {
                    sql.record(run_sql.await?, 1);
                    gw.record(run_gateway.await?, 1);
                }
            }
            gw_rounds.push(gw.summary());
            sql_rounds.push(sql.summary());
        }
        let (g, d) = (median_by_p95(gw_rounds), median_by_p95(sql_rounds));
        println!(
            "| {} | `{}` | {} | {} / {} / {} | {} / {} / {} | {} |",
            t.class,
            t.q,
            matches(&adm, tenant_uuid, &query).await?,
            ms(g.p50),
            ms(g.p95),
            ms(g.p99),
            ms(d.p50),
            ms(d.p95),
            ms(d.p99),
            ratio(g.p95.as_secs_f64(), d.p95.as_secs_f64())
        );
    }
    println!();

    // ---- lag from contact.created to searchable ------------------------------------------------
    let mut lag = Samples::default();
    let mut tasks = tokio::task::JoinSet::new();
    let pace = Duration::from_millis(100);
    for i in 0..args.lag_samples {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let last = format!("Quillfeather{}", Uuid::new_v4().simple());
        let last = last[..20].to_owned();
        tasks.spawn(async move {
            http.post(format!("{base}/contacts"))
                .bearer_auth(&*token)
                .json(&json!({"firstName": format!("Lag{i}"), "lastName": last}))
                .send()
                .await?
                .error_for_status()?;
            let created = Instant::now();
            let deadline = created + Duration::from_secs(60);
            loop {
                let body = http
                    .get(format!("{base}/search"))
                    .query(&[("q", last.as_str()), ("types", "contact")])
                    .bearer_auth(&*token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Json>()
                    .await?;
                let found = body["items"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|h| h["title"].as_str().is_some_and(|t| t.ends_with(&last)))
                });
                if found {
                    return anyhow::Ok(created.elapsed());
                }
                anyhow::ensure!(Instant::now() < deadline, "{last} not searchable in 60 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::time::sleep(pace).await;
    }
    while let Some(r) = tasks.join_next().await {
        lag.record(r??, 1);
    }
    let l = lag.summary();
    println!(
        "### Lag from `contact.created` to searchable ({} contacts created through the gateway, one every {} ms, each searched for every 10 ms)",
        l.samples,
        pace.as_millis()
    );
    println!();
    println!("| p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---:|---:|---:|");
    println!("| {} | {} | {} |", ms(l.p50), ms(l.p95), ms(l.p99));
    adm.close().await?;
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}
