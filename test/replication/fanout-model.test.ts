/**
 * cluster/replication/fanout-model.ts, the fan-out model (issue 10 item 16): what the relay
 * chain promises at 100 and 1,000 nodes, and that a node lost mid-chain costs a bounded extra.
 *   - chain: the origin sends one copy, the cluster N-1, nothing is pulled afterwards; the last
 *     node holds the blob after one transfer + (N-1) hop delays (a chunk over a link, plus latency);
 *   - star and mirror-then-pull (before): the origin's link carries N-1 (W-1, then a share of the
 *     pulls) copies, and the spread takes that many transfers;
 *   - a hop killed or frozen mid-chain: every live node still ends with the blob, the origin
 *     sends at most one copy more, the bytes wasted are the partial copies the nodes after the
 *     lost one dropped, and the spread takes about one transfer more;
 *   - the same parameters give the same result.
 */
import t from 'tap'
import { simulateFanout, DEFAULT_PARAMS, type FanoutParams } from '../../cluster/replication/fanout-model.js'
import { stallAllowance } from '../../cluster/replication/upload-mirror.js'
import { ARRIVING_IDLE_MS } from '../../cluster/replication/mirror-receiver.js'
import { SETTLE_MS } from '../../cluster/replication/replicator.js'

const P = (nodes: number, extra: Partial<FanoutParams> = {}): FanoutParams => ({ ...DEFAULT_PARAMS, nodes, ...extra })
const T = DEFAULT_PARAMS.blobBytes / DEFAULT_PARAMS.linkBytesPerSec + DEFAULT_PARAMS.latencyMs / 1000
const L = DEFAULT_PARAMS.latencyMs / 1000
const COMMIT = DEFAULT_PARAMS.commitMs / 1000
/** One hop's pipeline delay: a chunk over a link, plus the latency. */
const HOP = DEFAULT_PARAMS.chunkBytes / DEFAULT_PARAMS.linkBytesPerSec + L

t.test('chain: the origin sends one copy, and the spread is one transfer plus a hop delay per node', async (t) => {
  for (const n of [2, 3, 5, 100, 1000]) {
    const r = simulateFanout('chain', P(n))
    t.equal(r.holders, n, `${n} nodes: every node holds the blob`)
    t.ok(Math.abs(r.originEgressCopies - 1) < 1e-9, `${n} nodes: the origin sent ${r.originEgressCopies} copy`)
    t.ok(Math.abs(r.totalEgressCopies - (n - 1)) < 1e-9, `${n} nodes: ${r.totalEgressCopies} copies in all, one per other node`)
    t.equal(r.backgroundCopies, 0, `${n} nodes: nothing left for replication`)
    const expected = T + (n - 1) * HOP
    t.ok(r.spreadS >= expected - 1e-6 && r.spreadS <= expected + 3 * L + 2 * COMMIT, `${n} nodes: spread ${r.spreadS.toFixed(3)} s ≈ one transfer ${T.toFixed(3)} s + ${n - 1} × ${(HOP * 1000).toFixed(3)} ms = ${expected.toFixed(3)} s`)
    const w = Math.floor(n / 2) + 1
    t.ok(r.ackS <= r.spreadS + (w - 1) * L + 1e-9, `${n} nodes: the 201 (${r.ackS.toFixed(3)} s) comes once the first W-1 hops' answers are back, not after the whole chain's`)
  }
  const r100 = simulateFanout('chain', P(100))
  const r1000 = simulateFanout('chain', P(1000))
  t.ok(Math.abs((r1000.spreadS - r100.spreadS) - 900 * HOP) < 0.01, '900 more nodes cost 900 hop delays, not 900 transfers')
  t.ok(r1000.ratio < 1.15, `1,000 nodes in ${r1000.ratio.toFixed(3)} transfers`)
})

t.test('star and mirror-then-pull: the origin\'s link carries the copies, the spread takes that many transfers', async (t) => {
  for (const n of [5, 100, 1000]) {
    const star = simulateFanout('star', P(n))
    t.ok(Math.abs(star.originEgressCopies - (n - 1)) < 1e-6, `${n} nodes, star: the origin sends ${n - 1} copies`)
    t.ok(Math.abs(star.ratio / (n - 1) - 1) < 0.001, `${n} nodes, star: ${star.ratio.toFixed(2)} transfers`)
    const before = simulateFanout('mirror-pull', P(n))
    const w = Math.floor(n / 2) + 1
    t.ok(before.originEgressCopies >= w - 1, `${n} nodes, mirror W-1 + pull: the origin sends ${before.originEgressCopies} copies (W-1 = ${w - 1} mirrors, then its share of the pulls)`)
    t.ok(before.ratio >= w - 1, `${n} nodes, mirror W-1 + pull: ${before.ratio.toFixed(2)} transfers`)
    t.equal(before.holders, n, 'every node ends with the blob')
  }
})

t.test('a node lost mid-chain: every live node still ends with the blob; the extra egress is bounded', async (t) => {
  for (const n of [5, 100, 1000]) {
    const hop = Math.floor(n / 2)
    const fraction = 0.5
    const whole = simulateFanout('chain', P(n))
    for (const kind of ['kill', 'freeze'] as const) {
      const r = simulateFanout('chain', P(n, { loss: { hop, atFraction: fraction, kind } }))
      const what = `${n} nodes, hop ${hop} ${kind === 'kill' ? 'killed' : 'frozen'}`
      t.equal(r.live, n - 1, `${what}: ${n - 1} live nodes`)
      t.equal(r.holders, r.live, `${what}: every live node holds the blob`)
      t.equal(r.backgroundCopies, n - 1 - hop, `${what}: the ${n - 1 - hop} nodes after it copy it through replication`)
      // Holders: the origin and the hops before the lost one; each serves its share of the pulls.
      const share = Math.ceil((n - hop) / hop)
      t.ok(r.originEgressCopies <= 1 + share + 1e-9, `${what}: the origin sent ${r.originEgressCopies.toFixed(2)} copies (its chain copy and at most ${share} pull(s))`)
      const wasted = fraction * (n - hop)
      t.ok(r.totalEgressCopies <= n - 1 + wasted + 1e-6, `${what}: ${r.totalEgressCopies.toFixed(2)} copies in all: the ${n - 2} needed, the partial copies dropped after the lost hop (${wasted}), no more`)
      const late = kind === 'freeze' ? stallAllowance(hop - 1) / 1000 + ARRIVING_IDLE_MS / 1000 : 0
      const bound = whole.spreadS + share * T + late + 2 * SETTLE_MS / 1000 + 0.1
      t.ok(r.spreadS <= bound, `${what}: spread ${r.spreadS.toFixed(2)} s, within one more transfer per pull (and the stall allowances) of the whole chain's ${whole.spreadS.toFixed(2)} s`)
    }
  }
})

t.test('the model is deterministic', async (t) => {
  const params = P(200, { loss: { hop: 70, atFraction: 0.3, kind: 'kill' }, seed: 7 })
  t.same(simulateFanout('chain', params), simulateFanout('chain', params))
  t.same(simulateFanout('mirror-pull', P(50, { seed: 3 })), simulateFanout('mirror-pull', P(50, { seed: 3 })))
})
