/**
 * Errors of the Raft core and driver. Codes never change; messages may.
 * Sentinels are compared with `===` or by `code`.
 */
export type RaftErrorCode =
  | 'RAFT_PROPOSAL_DROPPED'
  | 'RAFT_PROPOSAL_TOO_LARGE'
  | 'RAFT_CONF_CHANGE_REJECTED'
  | 'RAFT_NOT_LEADER'
  | 'RAFT_LEADERSHIP_LOST'
  | 'RAFT_TIMEOUT'
  | 'RAFT_STOPPED'
  | 'RAFT_BAD_MESSAGE'

export class RaftError extends Error {
  static override name = 'RaftError'
  readonly code: RaftErrorCode
  constructor (code: RaftErrorCode, message: string) {
    super(message)
    this.name = 'RaftError'
    this.code = code
  }
}

/** No leader known, a leadership transfer is under way, or this node is not a member. */
export const ErrProposalDropped = new RaftError('RAFT_PROPOSAL_DROPPED', 'raft proposal dropped')
/** An entry larger than maxEntryBytes: it could not be delivered to the followers, so it is never proposed. */
export const ErrProposalTooLarge = new RaftError('RAFT_PROPOSAL_TOO_LARGE', 'raft proposal larger than the largest entry the cluster replicates')
/** Another change is pending, the leader has not committed in its term, or the change is invalid. */
export const ErrConfChangeRejected = new RaftError('RAFT_CONF_CHANGE_REJECTED', 'raft configuration change rejected')
/** The operation needs the leader (e.g. removing the last voter is refused). */
export const ErrNotLeader = new RaftError('RAFT_NOT_LEADER', 'not the raft leader')
/** The term changed while a request waited; its outcome is unknown (it may still commit). */
export const ErrLeadershipLost = new RaftError('RAFT_LEADERSHIP_LOST', 'raft leadership changed; outcome unknown')
/** The request waited longer than its deadline; its outcome is unknown. */
export const ErrTimeout = new RaftError('RAFT_TIMEOUT', 'raft request timed out; outcome unknown')
/** The driver was stopped. */
export const ErrStopped = new RaftError('RAFT_STOPPED', 'raft driver stopped')
/** A frame that does not decode to a Raft message. */
export const ErrBadMessage = new RaftError('RAFT_BAD_MESSAGE', 'malformed raft message')

export function isRaftError (err: unknown, code?: RaftErrorCode): err is RaftError {
  return err instanceof RaftError && (code === undefined || err.code === code)
}
