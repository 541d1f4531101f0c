// safetensors reader, writer and sharded folders: a round trip keeps every byte, and every malformed file
// is refused with an lp::Error that names the file and says what is wrong.
#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "util/test_util.h"

namespace lp::io {
namespace {

using test::TempDir;
using ::testing::HasSubstr;

// A safetensors image from a header text and a data area, with the length prefix in little-endian.
std::string image(const std::string& header, const std::string& data = "", uint64_t len_override = 0) {
  uint64_t n = len_override ? len_override : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i) & 0xff);
  return out + header + data;
}

// The lp::Error message that parsing `bytes` gives ("" when it parses).
std::string parse_error(const std::string& bytes, const std::string& label = "bad.safetensors") {
  try {
    SafetensorsFile::parse(bytes.data(), bytes.size(), label);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string one_tensor(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"x":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}";
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>(i % 17) - 8.0f) / 8.0f;
  return v;
}

TEST(Safetensors, RoundTripAllDtypesScalarsEmptyAndMetadata) {
  TempDir dir("st");
  auto f32 = ramp(6, 1.5f);
  std::vector<uint16_t> f16(12), bf16(5);
  from_f32(DType::kF16, ramp(12, 2.0f).data(), f16.data(), f16.size());
  from_f32(DType::kBF16, ramp(5, 3.0f).data(), bf16.data(), bf16.size());
  float scalar = 42.5f;

  SafetensorsWriter w;
  w.add("a.f32", DType::kF32, {2, 3}, f32.data());
  w.add("scalar", DType::kF32, {}, &scalar);
  w.add("b.f16", DType::kF16, {3, 4}, f16.data());
  w.add("empty", DType::kBF16, {0, 7}, nullptr);
  w.add("c.bf16", DType::kBF16, {5}, bf16.data());
  w.set_metadata("format", "pt");
  w.set_metadata("note", "héllo");
  w.write(dir / "m.safetensors");

  std::string raw = test::read_file(dir / "m.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ(raw.size(), 8 + n + 6 * 4 + 4 + 12 * 2 + 5 * 2);

  auto f = SafetensorsFile::open(dir / "m.safetensors");
  ASSERT_EQ(f->tensors().size(), 5u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "héllo");

  const TensorInfo* a = f->find("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape_str(), "[2, 3]");
  EXPECT_EQ(a->numel(), 6);
  ASSERT_EQ(a->nbytes, 24u);
  EXPECT_EQ(std::memcmp(a->data, f32.data(), 24), 0);

  const TensorInfo* s = f->find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_EQ(s->shape_str(), "[]");
  EXPECT_EQ(std::memcmp(s->data, &scalar, 4), 0);

  const TensorInfo* b = f->find("b.f16");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kF16);
  EXPECT_TRUE(b->aligned());
  EXPECT_EQ(std::memcmp(b->data, f16.data(), 24), 0);

  const TensorInfo* e = f->find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ(e->nbytes, 0u);

  const TensorInfo* c = f->find("c.bf16");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(std::memcmp(c->data, bf16.data(), 10), 0);

  // Tensors sit in the data area in the order added.
  EXPECT_LT(a->data, s->data);
  EXPECT_LT(s->data, b->data);
  EXPECT_LT(b->data, c->data);
  EXPECT_EQ(f->find("missing"), nullptr);
}

TEST(Safetensors, OpenFileAndOpenDirSingle) {
  TempDir dir("st");
  float v[2] = {1, 2};
  SafetensorsWriter w;
  w.add("w", DType::kF32, {2}, v);
  w.write(dir / "model.safetensors");
  auto set = TensorSet::open_dir(dir.path());
  ASSERT_NE(set.find("w"), nullptr);
  EXPECT_EQ(set.total_bytes(), 8u);
  auto set2 = TensorSet::open_file(dir / "model.safetensors");
  EXPECT_EQ(set2.all().size(), 1u);
}

// A copied tensor's pages can be given back; reading it again afterwards faults the same bytes in from the
// file. A range outside the set's mappings is a programmer error.
TEST(Safetensors, DropResidentKeepsTheDataReadable) {
  TempDir dir("st");
  std::vector<float> v(8 * 4096 + 3);  // spans several whole pages whatever the header length
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f;
  SafetensorsWriter w;
  w.add("w", DType::kF32, {static_cast<int64_t>(v.size())}, v.data());
  w.write(dir / "model.safetensors");
  auto set = TensorSet::open_dir(dir.path());
  const TensorInfo* t = set.find("w");
  ASSERT_NE(t, nullptr);
  std::vector<float> copy(v.size());
  std::memcpy(copy.data(), t->data, t->nbytes);
  set.drop_resident(t->data, t->nbytes);
  EXPECT_EQ(0, std::memcmp(t->data, v.data(), t->nbytes));
  EXPECT_EQ(copy, v);
  EXPECT_DEATH(set.drop_resident(copy.data(), 16), "not inside a file mapping");
  EXPECT_DEATH(set.drop_resident(t->data, t->nbytes + 4096 * 4), "not inside a file mapping");
}

// Two shards and an index, as Hugging Face writes them.
void write_sharded(const TempDir& dir, const std::string& index_json) {
  float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
  SafetensorsWriter w1, w2;
  w1.add("layers.0.w", DType::kF32, {2, 2}, a);
  w2.add("layers.1.w", DType::kF32, {2}, b);
  w1.write(dir / "model-00001-of-00002.safetensors");
  w2.write(dir / "model-00002-of-00002.safetensors");
  test::write_file(dir / "model.safetensors.index.json", index_json);
}

std::string open_dir_error(const std::filesystem::path& dir) {
  try {
    TensorSet::open_dir(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, ShardedFolderWithIndex) {
  TempDir dir("st");
  write_sharded(dir, R"({"metadata":{"total_size":24},"weight_map":{
      "layers.0.w":"model-00001-of-00002.safetensors","layers.1.w":"model-00002-of-00002.safetensors"}})");
  auto set = TensorSet::open_dir(dir.path());
  auto all = set.all();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]->name, "layers.0.w");
  EXPECT_EQ(all[1]->name, "layers.1.w");
  EXPECT_EQ(set.total_bytes(), 24u);
  float got[2];
  std::memcpy(got, set.find("layers.1.w")->data, 8);
  EXPECT_EQ(got[1], 6.0f);
}

TEST(Safetensors, IndexNamingMissingTensorOrShardOrEscapingPath) {
  {
    TempDir dir("st");
    write_sharded(dir, R"({"weight_map":{"layers.0.w":"model-00001-of-00002.safetensors",
        "layers.1.w":"model-00001-of-00002.safetensors"}})");
    EXPECT_THAT(
        open_dir_error(dir.path()),
        HasSubstr("places tensor layers.1.w in shard model-00001-of-00002.safetensors, but that shard "
                  "has no such tensor"));
  }
  {
    TempDir dir("st");
    write_sharded(dir, R"({"weight_map":{"layers.0.w":"model-00003-of-00003.safetensors"}})");
    EXPECT_THAT(open_dir_error(dir.path()),
                HasSubstr("names shard model-00003-of-00003.safetensors, which does not exist"));
  }
  for (const char* bad : {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", ".."}) {
    TempDir dir("st");
    write_sharded(dir, std::string(R"({"weight_map":{"layers.0.w":")") + bad + R"("}})");
    EXPECT_THAT(open_dir_error(dir.path()), HasSubstr("shard names must be plain file names")) << bad;
  }
  {  // a tensor stored in two shards
    TempDir dir("st");
    float a[2] = {1, 2};
    SafetensorsWriter w1, w2;
    w1.add("t", DType::kF32, {2}, a);
    w2.add("t", DType::kF32, {2}, a);
    w2.add("u", DType::kF32, {2}, a);
    w1.write(dir / "s1.safetensors");
    w2.write(dir / "s2.safetensors");
    test::write_file(dir / "model.safetensors.index.json",
                     R"({"weight_map":{"t":"s1.safetensors","u":"s2.safetensors"}})");
    EXPECT_THAT(open_dir_error(dir.path()),
                HasSubstr("tensor t appears in two shards of " + dir.path().string() +
                          ": s1.safetensors and s2.safetensors"));
  }
  {  // duplicate key in the index
    TempDir dir("st");
    write_sharded(dir, R"({"weight_map":{"layers.0.w":"model-00001-of-00002.safetensors",
        "layers.0.w":"model-00002-of-00002.safetensors"}})");
    EXPECT_THAT(open_dir_error(dir.path()), HasSubstr("duplicate key \"layers.0.w\""));
  }
}

TEST(Safetensors, FolderWithoutWeightsSaysWhatWasLookedFor) {
  TempDir dir("st");
  EXPECT_THAT(open_dir_error(dir.path()),
              HasSubstr("looked for model.safetensors and model.safetensors.index.json"));
  test::write_file(dir / "pytorch_model.bin", "PK");
  std::string msg = open_dir_error(dir.path());
  EXPECT_THAT(msg, HasSubstr("found pytorch_model.bin"));
  EXPECT_THAT(msg, HasSubstr("pickle checkpoints"));
  EXPECT_THAT(msg, HasSubstr("must be converted to safetensors"));
  EXPECT_THAT(open_dir_error(dir / "nope"), HasSubstr("is not a folder"));
}

TEST(Safetensors, TruncatedFiles) {
  EXPECT_THAT(parse_error("abc"),
              HasSubstr("bad.safetensors is too small to be a safetensors file (3 bytes"));
  EXPECT_THAT(parse_error(""), HasSubstr("(0 bytes"));
  EXPECT_THAT(
      parse_error(image("{}", "", 100)),
      HasSubstr("header length 100 in bad.safetensors runs past the end of the file (file is 10 bytes)"));
  EXPECT_THAT(parse_error(image("", "", UINT64_MAX)), HasSubstr("exceeds the 100 MB limit"));
  EXPECT_THAT(parse_error(image("", "", (uint64_t{100} << 20) + 1)), HasSubstr("exceeds the 100 MB limit"));
  TempDir dir("st");
  test::write_file(dir / "empty.safetensors", "");
  try {
    SafetensorsFile::open(dir / "empty.safetensors");
    ADD_FAILURE() << "empty file accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("empty.safetensors is too small"));
  }
}

TEST(Safetensors, HeaderNotJsonOrNotObject) {
  EXPECT_THAT(parse_error(image("{\"x\":")), HasSubstr("invalid JSON header in bad.safetensors: "));
  EXPECT_THAT(parse_error(image("{\"x\xff\":1}")), HasSubstr("invalid JSON header"));  // not UTF-8
  EXPECT_THAT(parse_error(image("[1,2]")),
              HasSubstr("JSON header in bad.safetensors is not an object (found array)"));
  EXPECT_THAT(parse_error(image("{\"__metadata__\":[]}")),
              HasSubstr("__metadata__ in bad.safetensors must be"));
  EXPECT_THAT(parse_error(image("{\"__metadata__\":{\"k\":1}}")),
              HasSubstr("__metadata__ value for \"k\" in bad.safetensors must be a string"));
  EXPECT_THAT(parse_error(image("{\"x\":1}")),
              HasSubstr("entry for tensor x in bad.safetensors must be an object"));
  EXPECT_THAT(parse_error(image(R"({"x":{"dtype":"F32","shape":[]}})")),
              HasSubstr("has no \"data_offsets\""));
  EXPECT_EQ(parse_error(image("{}   ")), "");  // trailing padding is fine
}

TEST(Safetensors, DuplicateNames) {
  std::string h = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(parse_error(image(h, std::string(8, '\0'))),
              HasSubstr("duplicate tensor name \"x\" in header of bad.safetensors"));
  std::string h2 = R"({"x":{"dtype":"F32","dtype":"I8","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_THAT(parse_error(image(h2, std::string(4, '\0'))),
              HasSubstr("duplicate key \"dtype\" in object \"x\""));
}

TEST(Safetensors, DtypesUnknownAndUnsupported) {
  std::string data(16, '\0');
  EXPECT_THAT(parse_error(image(one_tensor("Q4_K", "[1]", "[0,4]"), data)),
              HasSubstr("unknown dtype \"Q4_K\" for tensor x in bad.safetensors"));
  for (const char* dt : {"I8", "U8", "F8_E4M3", "F64", "BOOL"}) {
    EXPECT_THAT(parse_error(image(one_tensor(dt, "[1]", "[0,1]"), data)),
                HasSubstr(std::string("unsupported dtype ") + dt +
                          " for tensor x in bad.safetensors (supported: F32, F16, BF16; I32 for packed int4 weights)"));
  }
  EXPECT_THAT(parse_error(image(R"({"x":{"dtype":3,"shape":[1],"data_offsets":[0,4]}})", data)),
              HasSubstr("dtype of tensor x in bad.safetensors must be a string"));
}

// I32 tensors (packed int4 weights) are read, but only through find_i32: a float reader (weights, adapters)
// can never take one for a matrix. Their byte count and ranges are validated like any other tensor's.
TEST(Safetensors, I32TensorsAreKeptApartFromFloatTensors) {
  TempDir dir("st_i32");
  std::vector<int32_t> packed = {0x76543210, -1, INT32_MIN, 7, 0x12345678, 0};
  auto f32 = ramp(3, 1.0f);
  SafetensorsWriter w;
  w.add_i32("q.qweight", {2, 3}, packed.data());
  w.add("q.scales", DType::kF32, {3}, f32.data());
  w.write(dir.path() / "model.safetensors");

  TensorSet ts = TensorSet::open_dir(dir.path());
  EXPECT_EQ(ts.find("q.qweight"), nullptr);
  EXPECT_EQ(ts.find_i32("q.scales"), nullptr);
  ASSERT_NE(ts.find("q.scales"), nullptr);
  EXPECT_EQ(ts.all().size(), 1u);
  const I32TensorInfo* t = ts.find_i32("q.qweight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape_str(), "[2, 3]");
  EXPECT_EQ(t->nbytes, 24u);
  for (size_t i = 0; i < packed.size(); ++i) EXPECT_EQ(t->at(static_cast<int64_t>(i)), packed[i]) << i;
  EXPECT_EQ(ts.total_bytes(), 24u + 12u);
  // The header spells it I32, the data is little-endian.
  std::string bytes = test::read_file(dir.path() / "model.safetensors");
  EXPECT_NE(bytes.find(R"("dtype":"I32")"), std::string::npos);

  std::string data(16, '\0');
  EXPECT_THAT(parse_error(image(one_tensor("I32", "[3]", "[0,8]"), data)),
              HasSubstr("shape [3] of I32 needs 12 bytes but data_offsets [0, 8] span 8"));
  std::string h = R"({"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                  R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(parse_error(image(h, data)), HasSubstr("overlap"));
}

TEST(Safetensors, ShapeProblems) {
  std::string data(64, '\0');
  EXPECT_THAT(
      parse_error(image(one_tensor("F32", "[2,3]", "[0,20]"), data)),
      HasSubstr("tensor x in bad.safetensors: shape [2,3] of F32 needs 24 bytes but data_offsets [0, 20] "
                "span 20"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[1099511627776,1099511627776]", "[0,0]"), data)),
              HasSubstr("is too large (size overflows)"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[4611686018427387904]", "[0,0]"), data)),
              HasSubstr("is too large (size overflows)"));  // 2^62 elements * 4 bytes
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[18446744073709551615]", "[0,0]"), data)),
              HasSubstr("must contain non-negative integers"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[2,-1]", "[0,0]"), data)),
              HasSubstr("negative dimension -1 in shape of tensor x in bad.safetensors"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[2.5]", "[0,8]"), data)),
              HasSubstr("must contain non-negative integers (found 2.5)"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "\"2\"", "[0,8]"), data)),
              HasSubstr("shape of tensor x in bad.safetensors must be an array"));
  // A zero in the shape makes an overflowing product harmless only if it comes first; both are refused
  // or accepted consistently: here 0 * huge = 0 elements, which is a valid empty tensor.
  EXPECT_EQ(parse_error(image(one_tensor("F32", "[0,1099511627776]", "[0,0]"), data)), "");
}

TEST(Safetensors, RangeProblems) {
  std::string data(16, '\0');
  EXPECT_THAT(
      parse_error(image(one_tensor("F32", "[4]", "[4,20]"), data)),
      HasSubstr("data_offsets [4, 20] of tensor x in bad.safetensors run past the end of the data area "
                "(16 bytes)"));
  EXPECT_THAT(parse_error(image(one_tensor("F32", "[1]", "[8,4]"), data)),
              HasSubstr("data_offsets of tensor x in bad.safetensors: begin 8 > end 4"));
  for (const char* bad : {"[0]", "[0,4,8]", "\"0-4\"", "[0,\"4\"]", "[-4,0]", "[0,4.0]", "null"}) {
    EXPECT_THAT(
        parse_error(image(one_tensor("F32", "[1]", bad), data)),
        HasSubstr("data_offsets of tensor x in bad.safetensors must be [begin, end] with non-negative "
                  "integers"))
        << bad;
  }
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_THAT(parse_error(image(h, data)),
              HasSubstr("tensors a and b in bad.safetensors overlap (data_offsets [0, 8] and [4, 12])"));
  std::string same = R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  EXPECT_THAT(parse_error(image(same, data)), HasSubstr("overlap"));
  // Gaps and empty tensors anywhere are fine.
  std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_EQ(parse_error(image(gap, data)), "");
}

TEST(Safetensors, WriterRefusesProgrammerErrors) {
  SafetensorsWriter w;
  float v = 0;
  w.add("a", DType::kF32, {1}, &v);
  EXPECT_DEATH(w.add("a", DType::kF32, {1}, &v), "added twice");
  EXPECT_DEATH(w.add("b", DType::kF32, {-1}, &v), "negative dimension");
}

}  // namespace
}  // namespace lp::io
