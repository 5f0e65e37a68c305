// KafkaJS against a running example broker: admin create and delete, produce with each codec
// KafkaJS supports (none and gzip built in, snappy through its codec package, LZ4 through a
// codec on lz4js; zstd's codec package needs a native build and is left out), consume
// everything back, and a group of two consumers sharing a topic's partitions.
//
//   node check.js HOST:PORT
//
// Every wait is bounded; the process exits non-zero on the first failure.
'use strict'

const assert = require('node:assert/strict')
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const lz4js = require('lz4js')

// KafkaJS takes each codec as a factory of { compress, decompress }. LZ4 through lz4js (LZ4's
// frame format in JavaScript): kafkajs-lz4's package needs a native build.
const LZ4Codec = () => ({
  async compress (encoder) { return Buffer.from(lz4js.compress(encoder.buffer)) },
  async decompress (buffer) { return Buffer.from(lz4js.decompress(buffer)) }
})
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = LZ4Codec

const broker = process.argv[2]
if (!broker) {
  console.error('usage: node check.js HOST:PORT')
  process.exit(2)
}
const kafka = new Kafka({ clientId: 'rivulet-kafkajs', brokers: [broker], logLevel: logLevel.NOTHING })
const suffix = `${process.pid}-${Date.now()}`

/** Waits until `done()` holds, checking every 100 ms, for at most `ms`. */
async function until (what, ms, done) {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function adminCreateAndDelete (admin) {
  const topic = `kafkajs-admin-${suffix}`
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), true)
  const listed = await admin.listTopics()
  assert.ok(listed.includes(topic), `${topic} listed after creation`)
  const meta = await admin.fetchTopicMetadata({ topics: [topic] })
  assert.equal(meta.topics[0].partitions.length, 3)
  // Creating it again is refused with TOPIC_ALREADY_EXISTS, which KafkaJS answers as false.
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] }), false)
  assert.equal((await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length, 3)
  await admin.deleteTopics({ topics: [topic], timeout: 10000 })
  assert.ok(!(await admin.listTopics()).includes(topic), `${topic} gone after deletion`)
  console.log('admin: created a topic of 3 partitions, refused it again, deleted it')
}

async function codecs (admin) {
  const topic = `kafkajs-codecs-${suffix}`
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
  const producer = kafka.producer()
  await producer.connect()
  const names = { None: CompressionTypes.None, GZIP: CompressionTypes.GZIP, Snappy: CompressionTypes.Snappy, LZ4: CompressionTypes.LZ4 }
  const sent = []
  for (const [name, compression] of Object.entries(names)) {
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: `${name}-${i}-${'x'.repeat(i)}` }))
    const [reply] = await producer.send({ topic, compression, acks: -1, messages })
    assert.equal(reply.errorCode, 0, `${name}: produced without error`)
    assert.equal(Number(reply.baseOffset), sent.length, `${name}: base offset follows the previous batch`)
    sent.push(...messages.map((m) => m.value))
  }
  await producer.disconnect()

  const consumer = kafka.consumer({ groupId: `kafkajs-codecs-${suffix}` })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()) } })
  await until('every produced record back', 30000, () => got.length >= sent.length)
  await consumer.disconnect()
  assert.deepEqual(got, sent)
  console.log(`codecs: ${sent.length} records produced with ${Object.keys(names).join(', ')} and consumed back in order`)
}

async function groupOfTwo (admin) {
  const topic = `kafkajs-group-${suffix}`
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true })
  const groupId = `kafkajs-group-${suffix}`
  const members = [0, 1].map(() => ({ consumer: kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 }), partitions: new Set(), values: [] }))
  for (const m of members) {
    await m.consumer.connect()
    await m.consumer.subscribe({ topic, fromBeginning: true })
    m.consumer.on(m.consumer.events.GROUP_JOIN, (e) => {
      m.partitions = new Set(e.payload.memberAssignment[topic] || [])
    })
    await m.consumer.run({ eachMessage: async ({ message }) => { m.values.push(message.value.toString()) } })
  }
  // Both members hold partitions, and between them all four, each once.
  await until('the two members to share the partitions', 60000, () =>
    members.every((m) => m.partitions.size > 0) && members.reduce((n, m) => n + m.partitions.size, 0) === 4)
  const [a, b] = members.map((m) => [...m.partitions])
  assert.equal(new Set([...a, ...b]).size, 4, `the members' partitions ${a} and ${b} do not overlap`)

  const producer = kafka.producer()
  await producer.connect()
  const sent = []
  for (let partition = 0; partition < 4; partition++) {
    const messages = Array.from({ length: 25 }, (_, i) => ({ partition, value: `p${partition}-${i}` }))
    await producer.send({ topic, acks: -1, messages })
    sent.push(...messages.map((m) => m.value))
  }
  await producer.disconnect()
  await until('every record consumed by one member or the other', 30000, () =>
    members.reduce((n, m) => n + m.values.length, 0) >= sent.length)
  for (const m of members) {
    for (const v of m.values) {
      const partition = Number(v.slice(1, v.indexOf('-')))
      assert.ok(m.partitions.has(partition), `${v} read by the member that holds partition ${partition}`)
    }
  }
  const got = members.flatMap((m) => m.values).sort()
  assert.deepEqual(got, [...sent].sort())
  for (const m of members) await m.consumer.disconnect()
  console.log(`group: two members shared 4 partitions (${a} and ${b}) and read ${sent.length} records, each once`)
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  try {
    await adminCreateAndDelete(admin)
    await codecs(admin)
    await groupOfTwo(admin)
  } finally {
    await admin.disconnect()
  }
}

const watchdog = setTimeout(() => { console.error('kafkajs check: over 150 s'); process.exit(1) }, 150000)
main().then(() => { clearTimeout(watchdog); console.log('kafkajs: all checks passed') }, (e) => {
  console.error(e)
  process.exit(1)
})
