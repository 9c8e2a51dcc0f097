/**
 * The metadata key layout. Every key is a string of parts joined by NUL, which sorts
 * before every character a name, digest or tag may hold, so a prefix scan over
 * `tag␀<repo>␀` never spills into `tag␀<repo>/sub␀` and tags come back in lexical order.
 *
 *   meta (classic-level)
 *   ├── sm␀applied                               → {index}            last Raft index applied
 *   ├── repo␀<repo>                               → {at}               repositories (the catalog)
 *   ├── blob␀<digest>                             → {size, links}      how many repositories link the blob
 *   ├── holder␀<digest>␀<peerId>                  → {}                 nodes that hold the blob's bytes
 *   ├── link␀<repo>␀<digest>                      → {size, at}         blobs a repository may serve
 *   ├── manifest␀<repo>␀<digest>                  → ManifestRecord     what a manifest is and references
 *   ├── mbody␀<repo>␀<digest>                     → raw bytes          stored exactly as pushed
 *   ├── tag␀<repo>␀<tag>                          → {digest, at}
 *   ├── tagsof␀<repo>␀<digest>␀<tag>              → {}                 reverse index: a manifest's tags
 *   ├── referrer␀<repo>␀<subject>␀<digest>        → Descriptor         referrers API
 *   ├── upload␀<id>                               → UploadRecord       open upload sessions
 *   ├── cluster␀info                              → {clusterId, secret} shared secret for join tokens
 *   ├── member␀<peerId>                           → MemberRecord       addresses of each member
 *   ├── removed␀<peerId>                          → {at}               never admitted again
 *   ├── jointoken␀<id>                            → {expiresAt}        join tokens handed out, until they expire
 *   ├── bref␀<repo>␀<digest>                      → {n}                manifests of the repository that reference the blob
 *   ├── mref␀<repo>␀<digest>                      → {n}                indexes of the repository that reference the manifest
 *   ├── unref␀<repo>␀<digest>                     → {since, size}      links no manifest references (GC candidates)
 *   ├── orphan␀<digest>                           → {since, size}      blobs no repository links (their bytes go at GC)
 *   ├── refs␀version                              → {version}          the four above are complete (cluster/metadata/refs.ts)
 *   ├── retention␀<name>                          → RetentionPolicy    cluster/retention/policy.ts
 *   ├── pulled␀<repo>␀<digest>                    → {at}               last pull of a manifest (batched, to the hour)
 *   ├── sx␀<index>␀…                              → {} / {digest}      search indexes and sx␀version (search-index.ts)
 *   ├── quota␀<name>, qusage␀<name>, qlink␀<name>␀<digest>                storage quotas and their usage (quotas.ts)
 *   ├── virtual␀<name>                            → VirtualRepo        virtual repositories: a prefix over members (virtual.ts)
 *   ├── session␀<clientId>                        → {seq, result, at}  deduplication of retried commands
 *   ├── sitepeer␀<name>                           → PeeringRecord      another site peered with this one (cluster/peering/)
 *   ├── siteseq                                   → {seq}              this site's last change-feed sequence
 *   ├── feed␀<seq, 16 digits>                     → FeedEntry          this site's replicable changes, in commit order
 *   ├── sitecursor␀<origin site>                  → SiteCursor         how far this site applied another site's feed
 *   ├── sitefail␀<origin site>␀<seq, 16 digits>   → SiteFailure        a shipped change this site could not apply
 *   ├── siteack␀<receiving site>                  → {seq, at}          how far another site acknowledged this site's feed
 *   ├── sitetrim                                  → {seq, at}          this site's feed is trimmed through seq (SiteTrimFeed)
 *   ├── hlc                                       → {l, c}             this site's hybrid logical clock (cluster/peering/hlc.ts)
 *   ├── tagver␀<repo>␀<tag>                       → {l, c, s, deleted?} the version of a tag's last write or delete (hlc.ts)
 *   ├── sitelanded␀<origin>␀<repo>␀<tag>          → {digest, seq, originAt, at}  when a tag from another site last landed here (site explain)
 *   ├── remote␀<name>                             → RemoteRecord       a pull-through cache (cluster/remote/model.ts)
 *   ├── rchecked␀<repo>␀<tag>                     → {digest, at}       when a remote's cached tag was last checked upstream
 *   ├── prop␀<repo>␀<digest>␀<key>␀<value>        → {user?, ro?}       a manifest's properties, user-set or read-only (properties.ts)
 *   ├── propidx␀<key>␀<value>␀<repo>␀<digest>     → {user?, ro?}       the same, inverted: manifests by property
 *   ├── propver␀<repo>␀<digest>                   → {l, c, s}          the version of the last change of a manifest's user properties (hlc.ts)
 *   ├── sum␀<digest>                              → {sha1, md5}        a blob's SHA-1 and MD5 (hex)
 *   └── sumidx␀sha1|md5␀<hex>␀<digest>            → {}                 blobs by checksum
 */
const SEP = '\u0000'

export const key = {
  applied: (): string => `sm${SEP}applied`,
  repo: (repo: string): string => `repo${SEP}${repo}`,
  repoPrefix: (): string => `repo${SEP}`,
  blob: (digest: string): string => `blob${SEP}${digest}`,
  blobPrefix: (): string => `blob${SEP}`,
  holder: (digest: string, peerId: string): string => `holder${SEP}${digest}${SEP}${peerId}`,
  holderPrefix: (digest: string): string => `holder${SEP}${digest}${SEP}`,
  link: (repo: string, digest: string): string => `link${SEP}${repo}${SEP}${digest}`,
  linkPrefix: (repo: string): string => `link${SEP}${repo}${SEP}`,
  manifest: (repo: string, digest: string): string => `manifest${SEP}${repo}${SEP}${digest}`,
  manifestPrefix: (repo: string): string => `manifest${SEP}${repo}${SEP}`,
  body: (repo: string, digest: string): string => `mbody${SEP}${repo}${SEP}${digest}`,
  tag: (repo: string, tag: string): string => `tag${SEP}${repo}${SEP}${tag}`,
  tagPrefix: (repo: string): string => `tag${SEP}${repo}${SEP}`,
  tagsOf: (repo: string, digest: string, tag: string): string => `tagsof${SEP}${repo}${SEP}${digest}${SEP}${tag}`,
  tagsOfPrefix: (repo: string, digest: string): string => `tagsof${SEP}${repo}${SEP}${digest}${SEP}`,
  referrer: (repo: string, subject: string, digest: string): string => `referrer${SEP}${repo}${SEP}${subject}${SEP}${digest}`,
  referrerPrefix: (repo: string, subject: string): string => `referrer${SEP}${repo}${SEP}${subject}${SEP}`,
  upload: (id: string): string => `upload${SEP}${id}`,
  uploadPrefix: (): string => `upload${SEP}`,
  session: (clientId: string): string => `session${SEP}${clientId}`,
  sessionPrefix: (): string => `session${SEP}`,
  clusterInfo: (): string => `cluster${SEP}info`,
  member: (peerId: string): string => `member${SEP}${peerId}`,
  memberPrefix: (): string => `member${SEP}`,
  removed: (peerId: string): string => `removed${SEP}${peerId}`,
  joinToken: (id: string): string => `jointoken${SEP}${id}`,
  joinTokenPrefix: (): string => `jointoken${SEP}`,
  blobRefs: (repo: string, digest: string): string => `bref${SEP}${repo}${SEP}${digest}`,
  manifestRefs: (repo: string, digest: string): string => `mref${SEP}${repo}${SEP}${digest}`,
  unref: (repo: string, digest: string): string => `unref${SEP}${repo}${SEP}${digest}`,
  unrefPrefix: (): string => `unref${SEP}`,
  orphan: (digest: string): string => `orphan${SEP}${digest}`,
  orphanPrefix: (): string => `orphan${SEP}`,
  refsVersion: (): string => `refs${SEP}version`,
  retention: (name: string): string => `retention${SEP}${name}`,
  retentionPrefix: (): string => `retention${SEP}`,
  pulled: (repo: string, digest: string): string => `pulled${SEP}${repo}${SEP}${digest}`,
  sitePeer: (name: string): string => `sitepeer${SEP}${name}`,
  sitePeerPrefix: (): string => `sitepeer${SEP}`,
  siteSeq: (): string => 'siteseq',
  feed: (seq: number): string => `feed${SEP}${String(seq).padStart(16, '0')}`,
  feedPrefix: (): string => `feed${SEP}`,
  siteCursor: (origin: string): string => `sitecursor${SEP}${origin}`,
  siteFailure: (origin: string, seq: number): string => `sitefail${SEP}${origin}${SEP}${String(seq).padStart(16, '0')}`,
  siteFailurePrefix: (origin: string): string => `sitefail${SEP}${origin}${SEP}`,
  siteAck: (site: string): string => `siteack${SEP}${site}`,
  siteLanded: (origin: string, repo: string, tag: string): string => `sitelanded${SEP}${origin}${SEP}${repo}${SEP}${tag}`,
  siteTrim: (): string => 'sitetrim',
  prop: (repo: string, digest: string, k: string, v: string): string => `prop${SEP}${repo}${SEP}${digest}${SEP}${k}${SEP}${v}`,
  propPrefix: (repo: string, digest: string): string => `prop${SEP}${repo}${SEP}${digest}${SEP}`,
  propKeyPrefix: (repo: string, digest: string, k: string): string => `prop${SEP}${repo}${SEP}${digest}${SEP}${k}${SEP}`,
  propIndex: (k: string, v: string, repo: string, digest: string): string => `propidx${SEP}${k}${SEP}${v}${SEP}${repo}${SEP}${digest}`,
  propIndexKeyPrefix: (k: string): string => `propidx${SEP}${k}${SEP}`,
  propIndexValuePrefix: (k: string, v: string): string => `propidx${SEP}${k}${SEP}${v}${SEP}`,
  propVersion: (repo: string, digest: string): string => `propver${SEP}${repo}${SEP}${digest}`,
  sum: (digest: string): string => `sum${SEP}${digest}`,
  sumIndex: (alg: 'sha1' | 'md5', hex: string, digest: string): string => `sumidx${SEP}${alg}${SEP}${hex}${SEP}${digest}`,
  sumIndexPrefix: (alg: 'sha1' | 'md5', hex: string): string => `sumidx${SEP}${alg}${SEP}${hex}${SEP}`,
  remote: (name: string): string => `remote${SEP}${name}`,
  remotePrefix: (): string => `remote${SEP}`,
  remoteChecked: (repo: string, tag: string): string => `rchecked${SEP}${repo}${SEP}${tag}`,
}

/** The parts of a key after its first (its kind): `[repo, digest]` for `link␀<repo>␀<digest>`. */
export function partsOf (k: string): string[] {
  return k.split(SEP).slice(1)
}

/** The last part of a key (the name, digest or tag it ends with). */
export function lastPart (k: string): string {
  return k.slice(k.lastIndexOf(SEP) + 1)
}
