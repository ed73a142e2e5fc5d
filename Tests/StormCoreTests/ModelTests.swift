import StormCore
import Testing

@Suite("Channel names")
struct ChannelNameTests {
    @Test("valid names", arguments: ["storm.events", "a", "chat:room-1.sub_2", "user@host=x", String(repeating: "a", count: 255)])
    func valid(name: String) throws {
        #expect(try ChannelName(validating: name).rawValue == name)
    }

    @Test(
        "invalid names are refused with invalid_channel",
        arguments: ["", ".", "a..b", ".a", "a.", "a b", "a.*", "*", "a.>", ">", "tab\there", "new\nline", "caf\u{e9}", "a/b", String(repeating: "a", count: 256)])
    func invalid(name: String) {
        #expect(throws: StormError.self) { try ChannelName(validating: name) }
        do {
            _ = try ChannelName(validating: name)
        } catch {
            #expect(error.code == .invalidChannel)
            #expect(!error.message.contains("\n"), "error messages never echo control bytes")
        }
    }
}

@Suite("JSON scanning")
struct JSONTests {
    @Test("valid documents", arguments: [#"{}"#, #"[]"#, #"  {"a":[1,2.5e-3,-0,true,false,null,"x\"\u00e9"]}  "#, "12345678901234567890", #""é""#])
    func valid(document: String) {
        #expect(JSONScanner.isValidDocument(Array(document.utf8)))
    }

    @Test(
        "invalid documents",
        arguments: ["", "{", #"{"a"}"#, #"{"a":1,}"#, "[1,]", "01", "1.", "-", "tru", #""\x""#, "{} {}", "\"a\nb\"", String(repeating: "[", count: 100) + String(repeating: "]", count: 100)])
    func invalid(document: String) {
        #expect(!JSONScanner.isValidDocument(Array(document.utf8)))
    }

    @Test("invalid UTF-8 inside strings is refused")
    func invalidUTF8() {
        #expect(!JSONScanner.isValidDocument([0x22, 0xC3, 0x28, 0x22]))
        #expect(!JSONScanner.isValidDocument([0x22, 0xED, 0xA0, 0x80, 0x22]))  // a UTF-16 surrogate
    }

    @Test("object members keep raw values; strings decode escapes and surrogate pairs")
    func members() throws {
        let members = try JSONScanner.objectMembers(Array(#"{"id": 7, "op":"pub\u006cish", "data": {"x": [1, 2]}, "s":"\ud83d\ude00"}"#.utf8))
        #expect(members["id"] == Array("7".utf8))
        #expect(try JSONScanner.string(members["op"] ?? []) == "publish")
        #expect(members["data"] == Array(#"{"x": [1, 2]}"#.utf8))
        #expect(try JSONScanner.string(members["s"] ?? []) == "😀")
        #expect(throws: JSONScanner.Failure.self) { try JSONScanner.objectMembers(Array("[1]".utf8)) }
    }

    @Test("compacting removes whitespace outside strings only")
    func compact() {
        let pretty = "{\n  \"a b\" : [ 1 ,\n 2 ],\t\"c\":\"x \\\" y\"\n}\n"
        #expect(JSONScanner.compacted(Array(pretty.utf8)) == Array(#"{"a b":[1,2],"c":"x \" y"}"#.utf8))
    }

    @Test("string writer escapes what RFC 8259 requires")
    func writer() {
        #expect(JSONWriter.quoted("a\"b\\c\n\u{01}é") == #""a\"b\\c\n\u0001é""#)
    }
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test("each payload kind round-trips through the envelope")
    func roundTrip() throws {
        let channel = try ChannelName(validating: "room.1")
        for (payload, encoding) in [
            (Array(#"{"k":[1,2]}"#.utf8), PayloadEncoding.json), (Array("hi there\n".utf8), .text), ([0xFF, 0x00, 0x80], .base64),
        ] {
            let envelope = Envelope(channel: channel, id: "abc-1", timestampMicros: 1_764_403_915_123_456, payload: payload)
            #expect(envelope.encoding == encoding)
            let bytes = envelope.encoded()
            #expect(!bytes.contains(0x0A), "an envelope is one line")
            let decoded = try Envelope(decoding: bytes)
            #expect(decoded == envelope)
        }
    }

    @Test("pretty JSON payloads are compacted onto one line")
    func compacted() throws {
        let envelope = Envelope(channel: try ChannelName(validating: "c"), id: "x-1", timestampMicros: 5, payload: Array("{\n \"a\": 1\n}\n".utf8))
        #expect(String(decoding: envelope.encoded(), as: UTF8.self) == #"{"type":"message","channel":"c","id":"x-1","ts":0.005,"data":{"a":1}}"#)
    }

    @Test("message ids are unique and share the instance prefix")
    func ids() {
        let generator = MessageIDGenerator()
        let ids = (0..<1000).map { _ in generator.next() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { $0.hasPrefix(generator.instanceID + "-") })
    }
}
