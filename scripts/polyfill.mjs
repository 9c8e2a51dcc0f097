// libp2p 3 calls Promise.withResolvers (ES2024, Node 22). Node 20 lacks it; load this first.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
